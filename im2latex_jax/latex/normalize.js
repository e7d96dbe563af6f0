// Parse tree -> normalized token form, the form every formula of
// im2latex-100k has (im2markup's `preprocess_latex.js normalize`).
//
// Reads one JSON string per line on stdin (a formula already through the text
// rewrites of im2latex_jax/latex/normalize.py), writes one JSON object per
// line on stdout: {"tokens": "a ^ { 2 }"} or {"error": "reason"}. The parser
// is im2markup's KaTeX 0.6 fork (katex_im2markup/, MIT), so what it accepts and
// how it groups is exactly what made the dataset; this file decides only how a
// parsed group is written back as tokens, the same way im2markup's renderer
// does, with one deliberate difference: a root's index is written
// (`\sqrt [ 3 ] { x }`), where the original wrote `[object Object]`.
"use strict";

var parseTree = require("./katex_im2markup/src/parseTree");
var Settings = require("./katex_im2markup/src/Settings");
var readline = require("readline");

// The fork's parser appends every consumed token to this global (for its
// `tokenize` mode); it must exist before the first parse.
global.global_str = "";

function Unsupported(message) {
    this.message = message;
}

// Writers for each parse-group type: (group, font, out) append tokens to
// `out`; `font` is the enclosing font command without its backslash, or null.
var WRITERS = {
    mathord: function(g, font, out) {
        if (font === "mathrm") {
            // Upright words are spelled letter by letter; a space is `\;`.
            for (var i = 0; i < g.value.length; i++) {
                out.push(g.value[i] === " " ? "\\;" : g.value[i]);
            }
        } else {
            out.push(g.value);
        }
    },
    ordgroup: function(g, font, out) {
        out.push("{");
        writeList(g.value, font, out);
        out.push("}");
    },
    text: function(g, font, out) {
        out.push("\\mathrm", "{");
        writeList(g.value.body, font, out);
        out.push("}");
    },
    supsub: function(g, font, out) {
        if (!g.value.base) {
            throw new Unsupported("a superscript or subscript without a base");
        }
        writeGroup(g.value.base, font, out);
        writeScript("_", g.value.sub, font, out);
        writeScript("^", g.value.sup, font, out);
    },
    genfrac: function(g, font, out) {
        out.push(g.value.hasBarLine ? "\\frac" : "\\binom");
        writeGroup(g.value.numer, font, out);
        writeGroup(g.value.denom, font, out);
    },
    array: function(g, font, out) {
        var v = g.value;
        out.push("\\begin{" + v.style + "}");
        if (v.style === "array" || v.style === "tabular") {
            out.push("{");
            if (v.cols) {
                v.cols.forEach(function(col) {
                    if (col && col.type === "align") out.push(col.align);
                    else if (col && col.type === "separator") out.push(col.separator);
                });
            } else {
                v.body[0].forEach(function() { out.push("c"); });
            }
            out.push("}");
        }
        v.body.forEach(function(row) {
            if (row.length === 1 && row[0].value.length === 0) return;  // empty row
            var first = row[0].value;
            if (first[0] && first[0].value === "\\hline") {
                out.push("\\hline");
                row[0].value = first.slice(1);
            }
            row.forEach(function(cell, i) {
                if (i > 0) out.push("&");
                writeGroup(cell, font, out);
            });
            out.push("\\\\");
        });
        out.push("\\end{" + v.style + "}");
    },
    sqrt: function(g, font, out) {
        out.push("\\sqrt");
        var index = g.value.index;
        if (index) {
            out.push("[");
            writeList(index.type === "ordgroup" ? index.value : [index], font, out);
            out.push("]");
        }
        writeGroup(g.value.body, font, out);
    },
    leftright: function(g, font, out) {
        out.push("\\left" + g.value.left);
        writeList(g.value.body, font, out);
        out.push("\\right" + g.value.right);
    },
    accent: function(g, font, out) {
        out.push(g.value.accent);
        writeBraced(g.value.base, font, out);
    },
    spacing: function(g, font, out) {
        out.push(g.value === " " ? "~" : g.value);
    },
    op: function(g, font, out) {
        if (g.value.symbol) {
            out.push(g.value.body);
            return;
        }
        // A named operator (\sin, \lim, ...) is spelled as \operatorname with
        // its letters; the star marks operators whose limits go above/below.
        out.push(g.value.limits === false ? "\\operatorname" : "\\operatorname*", "{");
        for (var i = 1; i < g.value.body.length; i++) out.push(g.value.body[i]);
        out.push("}");
    },
    font: function(g, font, out) {
        var name = g.value.font;
        if (name === "mbox" || name === "hbox") name = "mathrm";
        out.push("\\" + name);
        writeGroup(g.value.body, name, out);
    },
    delimsizing: function(g, font, out) {
        out.push(g.value.funcName, g.value.value);
    },
    styling: function(g, font, out) {
        out.push(g.value.original);
        writeList(g.value.value, font, out);
    },
    sizing: function(g, font, out) {
        if (g.value.original === "\\rm") {
            out.push("\\mathrm", "{");
            writeList(g.value.value, "mathrm", out);
            out.push("}");
        } else {
            out.push(g.value.original);
            writeList(g.value.value, font, out);
        }
    },
    rule: function(g, font, out) {
        var w = g.value.width, h = g.value.height;
        out.push("\\rule", "{", String(w.number), w.unit, "}",
                 "{", String(h.number), h.unit, "}");
    },
    llap: function(g, font, out) {
        out.push("\\llap");
        writeGroup(g.value.body, font, out);
    },
    rlap: function(g, font, out) {
        out.push("\\rlap");
        writeGroup(g.value.body, font, out);
    },
    phantom: function(g, font, out) {
        out.push("\\phantom", "{");
        writeList(g.value.value, font, out);
        out.push("}");
    },
};
// Lines over or under their body, which keeps its own braces: `\overline { { a b } }`.
["overline", "underline"].forEach(function(t) {
    WRITERS[t] = function(g, font, out) {
        out.push("\\" + t, "{");
        writeGroup(g.value.body, font, out);
        out.push("}");
    };
});
// Atoms written as their own text.
["textord", "bin", "rel", "open", "close", "inner", "punct"].forEach(function(t) {
    WRITERS[t] = function(g, font, out) { out.push(g.value); };
});

function writeGroup(group, font, out) {
    var writer = WRITERS[group.type];
    if (!writer) {
        // im2markup's renderer has no form for these either (\color, \KaTeX):
        // such a formula is left out of the dataset rather than guessed.
        throw new Unsupported("no token form for a '" + group.type + "' group");
    }
    writer(group, font, out);
}

function writeList(groups, font, out) {
    for (var i = 0; i < groups.length; i++) writeGroup(groups[i], font, out);
}

// An accent's base or a script is always braced: a lone atom gets braces, a
// group already has them.
function writeBraced(group, font, out) {
    if (group.type === "ordgroup") {
        writeGroup(group, font, out);
    } else {
        out.push("{");
        writeGroup(group, font, out);
        out.push("}");
    }
}

function writeScript(mark, group, font, out) {
    if (!group) return;
    out.push(mark);
    writeBraced(group, font, out);
}

function normalize(latex) {
    global.global_str = "";
    var tree = parseTree(latex, new Settings({}));
    var out = [];
    writeList(tree, null, out);
    return out.join(" ");
}

var rl = readline.createInterface({input: process.stdin, terminal: false});
rl.on("line", function(line) {
    var answer;
    try {
        answer = {tokens: normalize(JSON.parse(line))};
    } catch (e) {
        var message = (e && e.message) ? String(e.message) : String(e);
        answer = {error: message.split("\n")[0]};
    }
    process.stdout.write(JSON.stringify(answer) + "\n");
});
