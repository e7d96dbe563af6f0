// im2latex-jax page: upload / drop / paste an image, show the prediction,
// render it with KaTeX, and overlay per-token attention on a canvas.
// User and model text only ever goes through textContent / value / KaTeX.
(function () {
  "use strict";

  const LOW_CONFIDENCE = 0.7;
  const KATEX_OPTIONS = {
    displayMode: true, throwOnError: false, trust: false, strict: "ignore",
    maxSize: 50, maxExpand: 1000,
  };

  const $ = (id) => document.getElementById(id);
  const root = $("app");
  const el = {
    file: $("file"), dropzone: $("dropzone"), beam: $("beam"), rerun: $("rerun"),
    error: $("error"), spinner: $("spinner"), inputWrap: $("input-wrap"),
    preview: $("input-preview"), seenWrap: $("seen-wrap"), canvas: $("attn-canvas"), attnLabel: $("attn-label"),
    rendered: $("rendered"), latex: $("latex"), copy: $("copy"), tokens: $("tokens"),
    timing: $("timing"), theme: $("theme-toggle"),
  };
  const hasModel = root.dataset.hasModel === "1";
  const maxBytes = Number(root.dataset.maxUploadMb) * 1024 * 1024;

  let lastFile = null;      // the last uploaded Blob, for "Run again"
  let previewUrl = null;    // object URL of the preview, revoked on change
  let baseImage = null;     // HTMLImageElement of the preprocessed image
  let attention = null;     // {cell, grid, heat: [canvas]} of the last result
  let tokens = [];          // [{token, prob}] of the last result
  let requestId = 0;        // drops responses that a newer request superseded

  // ---- theme ---------------------------------------------------------------
  function setTheme(theme) {
    document.documentElement.dataset.bsTheme = theme;
    el.theme.textContent = theme === "dark" ? "Light" : "Dark";
    try { localStorage.setItem("im2latex-theme", theme); } catch (e) { /* private mode */ }
  }
  let saved = null;
  try { saved = localStorage.getItem("im2latex-theme"); } catch (e) { /* ignore */ }
  setTheme(saved || (window.matchMedia &&
      window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"));
  el.theme.addEventListener("click", () =>
    setTheme(document.documentElement.dataset.bsTheme === "dark" ? "light" : "dark"));

  // ---- errors --------------------------------------------------------------
  function showError(message) {
    el.error.textContent = message;
    el.error.classList.remove("d-none");
  }
  function clearError() {
    el.error.textContent = "";
    el.error.classList.add("d-none");
  }

  // ---- rendering -----------------------------------------------------------
  let renderPending = false;
  function renderLatex() {
    renderPending = false;
    const text = el.latex.value;
    if (!text.trim()) {
      el.rendered.replaceChildren();
      return;
    }
    try {
      katex.render(text, el.rendered, KATEX_OPTIONS);
    } catch (e) {
      // throwOnError is false, so only non-parse failures land here.
      el.rendered.textContent = "Cannot render: " + e.message;
    }
  }
  el.latex.addEventListener("input", () => {
    if (!renderPending) {
      renderPending = true;
      window.requestAnimationFrame(renderLatex);
    }
  });

  el.copy.addEventListener("click", async () => {
    const text = el.latex.value;
    try {
      await navigator.clipboard.writeText(text);
    } catch (e) {
      el.latex.select();
      document.execCommand("copy");  // http:// pages have no clipboard API
    }
    el.copy.textContent = "Copied";
    setTimeout(() => { el.copy.textContent = "Copy"; }, 1200);
  });

  // ---- attention overlay ---------------------------------------------------
  function loadImage(src) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("cannot load image"));
      img.src = src;
    });
  }

  // Turns a grayscale map into a red overlay whose alpha is the attention.
  function heatCanvas(mapImg) {
    const c = document.createElement("canvas");
    c.width = mapImg.naturalWidth;
    c.height = mapImg.naturalHeight;
    const ctx = c.getContext("2d");
    ctx.drawImage(mapImg, 0, 0);
    const px = ctx.getImageData(0, 0, c.width, c.height);
    const d = px.data;
    for (let i = 0; i < d.length; i += 4) {
      const a = d[i];
      d[i] = 230; d[i + 1] = 40; d[i + 2] = 40; d[i + 3] = Math.round(a * 0.75);
    }
    ctx.putImageData(px, 0, 0);
    return c;
  }

  function drawAttention(index) {
    if (!baseImage) return;
    const ctx = el.canvas.getContext("2d");
    ctx.clearRect(0, 0, el.canvas.width, el.canvas.height);
    ctx.drawImage(baseImage, 0, 0);
    el.attnLabel.textContent = "";
    if (index == null || !attention || !attention.heat[index]) return;
    const [gh, gw] = attention.grid;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(attention.heat[index], 0, 0, gw * attention.cell, gh * attention.cell);
    const t = tokens[index];
    el.attnLabel.textContent = t ? t.token + " · " + Math.round(t.prob * 100) + "%" : "";
  }

  // ---- results -------------------------------------------------------------
  function chip(token, prob, index) {
    const span = document.createElement("span");
    span.className = "chip" + (prob < LOW_CONFIDENCE ? " chip-low" : "");
    span.dataset.index = String(index);
    span.title = token + ": " + (prob * 100).toFixed(1) + "% confident";
    span.append(document.createTextNode(token));
    const p = document.createElement("span");
    p.className = "prob";
    p.textContent = Math.round(prob * 100) + "%";
    span.append(p);
    const on = () => { span.classList.add("active"); drawAttention(index); };
    const off = () => { span.classList.remove("active"); drawAttention(null); };
    span.addEventListener("mouseenter", on);
    span.addEventListener("mouseleave", off);
    span.addEventListener("focus", on);
    span.addEventListener("blur", off);
    span.tabIndex = 0;
    return span;
  }

  function clearResult() {
    el.latex.value = "";
    renderLatex();
    el.tokens.replaceChildren();
    el.timing.textContent = "";
    el.timing.title = "";
    el.seenWrap.classList.add("d-none");
    baseImage = null;
    attention = null;
    tokens = [];
  }

  async function showResult(data) {
    tokens = data.tokens.map((t, i) => ({token: t, prob: data.token_probs[i]}));
    el.latex.value = data.latex;
    renderLatex();
    el.tokens.replaceChildren(...data.tokens.map((t, i) => chip(t, data.token_probs[i], i)));
    const t = data.timings || {};
    const total = t.request != null ? t.request : t.total;
    el.timing.textContent = (total != null ? (total * 1000).toFixed(0) + " ms" : "") +
        (data.beam > 1 ? " · beam " + data.beam : " · greedy") +
        (data.logprob != null ? " · log p " + data.logprob.toFixed(2) : "") +
        (data.low_confidence ? " · ⚠ low confidence: " + (data.warnings || []).join("; ") : "");
    el.timing.title = Object.entries(t).map(([k, v]) => k + ": " + (v * 1000).toFixed(1) + " ms").join("\n");

    baseImage = await loadImage(data.image);
    el.canvas.width = baseImage.naturalWidth;
    el.canvas.height = baseImage.naturalHeight;
    // Small formulas are shown up to 2x so the attention is visible; the
    // frame's max-width still caps wide ones.
    el.canvas.style.width = (2 * baseImage.naturalWidth) + "px";
    el.seenWrap.classList.remove("d-none");
    const att = data.attention || {maps: []};
    const maps = await Promise.all(att.maps.map(loadImage));
    attention = {cell: att.cell, grid: att.grid, heat: maps.map(heatCanvas)};
    drawAttention(null);
  }

  // ---- upload --------------------------------------------------------------
  async function predict(file) {
    clearError();
    if (!hasModel) {
      showError("No model is loaded on the server.");
      return;
    }
    if (file.size > maxBytes) {
      showError("upload too large: the limit is " + root.dataset.maxUploadMb + " MB");
      return;
    }
    lastFile = file;
    el.rerun.disabled = false;
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    el.preview.src = previewUrl;
    el.inputWrap.classList.remove("d-none");

    clearResult();
    const id = ++requestId;
    const form = new FormData();
    form.append("image", file, file.name || "pasted.png");
    form.append("beam", el.beam.value);
    el.spinner.classList.remove("d-none");
    try {
      const resp = await fetch("api/predict", {method: "POST", body: form});
      let data = null;
      try { data = await resp.json(); } catch (e) { /* non-JSON from a proxy */ }
      if (id !== requestId) return;
      if (!resp.ok) {
        showError((data && data.error) || ("request failed: HTTP " + resp.status));
        return;
      }
      await showResult(data);
    } catch (e) {
      if (id === requestId) showError("request failed: " + e.message);
    } finally {
      if (id === requestId) el.spinner.classList.add("d-none");
    }
  }

  el.file.addEventListener("change", () => {
    if (el.file.files.length) predict(el.file.files[0]);
    el.file.value = "";  // choosing the same file again still fires change
  });
  el.rerun.addEventListener("click", () => { if (lastFile) predict(lastFile); });
  el.beam.addEventListener("change", () => { if (lastFile) predict(lastFile); });

  ["dragenter", "dragover"].forEach((type) => el.dropzone.addEventListener(type, (e) => {
    e.preventDefault();
    el.dropzone.classList.add("dragover");
  }));
  ["dragleave", "drop"].forEach((type) => el.dropzone.addEventListener(type, (e) => {
    e.preventDefault();
    el.dropzone.classList.remove("dragover");
  }));
  el.dropzone.addEventListener("drop", (e) => {
    const files = e.dataTransfer && e.dataTransfer.files;
    if (files && files.length) predict(files[0]);
  });
  // Dropping outside the zone must not navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());

  document.addEventListener("paste", (e) => {
    if (e.target === el.latex) return;  // pasting text into the editor
    const items = (e.clipboardData && e.clipboardData.items) || [];
    for (const item of items) {
      if (item.kind === "file" && item.type.startsWith("image/")) {
        e.preventDefault();
        predict(item.getAsFile());
        return;
      }
    }
  });
})();
