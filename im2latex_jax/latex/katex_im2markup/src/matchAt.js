// Stands in for the `match-at` package that KaTeX 0.6's lexer required:
// match `re` at exactly `pos` of `str` (null if it does not match there),
// through a sticky copy of the expression, made once per expression.
var sticky = new WeakMap();

module.exports = function matchAt(re, str, pos) {
    var copy = sticky.get(re);
    if (!copy) {
        copy = new RegExp(re.source, "y" + (re.ignoreCase ? "i" : "") +
                          (re.multiline ? "m" : "") + (re.unicode ? "u" : ""));
        sticky.set(re, copy);
    }
    copy.lastIndex = pos;
    return copy.exec(str);
};
