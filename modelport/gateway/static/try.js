// The try-it form of the dev server's page and of the console's "Try it" tab (`templates/_try_form.html`):
// sends multipart parts named `inputs.<name>`, `parameters.<name>` and `output_fields` to the form's
// `data-predict-url` (with the console session's CSRF token where the page carries one), shows the answer, and
// keeps a `curl` command for the form in `#try-curl` where the page has one. Everything from the module or the
// caller is written with `textContent`. Copy buttons: `data-copy` names the element whose text is copied.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fill(template, values) {
    return template.replace(/\{(\w+)\}/g, (whole, key) => (key in values ? String(values[key]) : whole));
  }

  function formatSize(bytes) {
    if (!Number.isFinite(bytes)) return "?";
    if (bytes < 1024) return bytes + " B";
    if (bytes < 1024 * 1024) return (bytes / 1024).toFixed(1) + " KiB";
    return (bytes / 1024 / 1024).toFixed(1) + " MiB";
  }

  // Copy buttons.

  document.addEventListener("click", async (event) => {
    const button = event.target instanceof Element ? event.target.closest("[data-copy]") : null;
    if (!button) return;
    const source = $(button.dataset.copy);
    const label = button.textContent;
    try {
      await navigator.clipboard.writeText(source.textContent);
      button.textContent = button.dataset.copied || label;
    } catch {
      window.getSelection().selectAllChildren(source);
    }
    setTimeout(() => { button.textContent = label; }, 1500);
  });

  const form = $("try-form");
  if (!form) return;
  const texts = JSON.parse($("try-texts").textContent);
  const predictUrl = new URL(form.dataset.predictUrl, location.href).href;
  const csrf = document.querySelector('meta[name="csrf-token"]');
  const controls = () => Array.from(form.querySelectorAll("[data-encoding]"));
  const outputBoxes = () => Array.from(form.querySelectorAll('input[name="output_fields"]'));
  const checkedOutputs = () => outputBoxes().filter((box) => box.checked).map((box) => box.value);

  // The request: multipart parts named like the spec, empty fields left out.

  function formData() {
    const data = new FormData();
    for (const input of controls()) {
      if (input.type === "file") {
        for (const file of input.files) data.append(input.name, file, file.name);
      } else if (input.type === "checkbox") {
        data.append(input.name, input.checked ? "true" : "false");
      } else if (input.value !== "") {
        data.append(input.name, input.value);
      }
    }
    for (const name of checkedOutputs()) data.append("output_fields", name);
    return data;
  }

  // The same request as a `curl` command: JSON, or -F parts when the module takes files.

  function literal(input) {
    switch (input.dataset.encoding) {
      case "number": return Number(input.value);
      case "bool": return input.type === "checkbox" ? input.checked : input.value === "true";
      case "choice": return JSON.parse(input.selectedOptions[0].dataset.literal);
      case "json": try { return JSON.parse(input.value); } catch { return input.value; }
      default: return input.value;
    }
  }

  function jsonBody() {
    const body = { inputs: {}, parameters: {} };
    for (const input of controls()) {
      if (input.type !== "checkbox" && input.value === "") continue;
      const [group, name] = input.name.split(".");
      body[group][name] = literal(input);
    }
    if (!Object.keys(body.parameters).length) delete body.parameters;
    const fields = checkedOutputs();
    if (fields.length < outputBoxes().length) body.output_fields = fields;
    return body;
  }

  const quote = (text) => "'" + String(text).replace(/'/g, "'\\''") + "'";
  // -F reads `@file`, `<file` and `;type=` inside values; --form-string sends the text as it is.
  const textPart = (name, value) => (/^[@<"]|;/.test(value) ? "--form-string " : "-F ") + quote(name + "=" + value);

  function formParts() {
    const parts = [];
    for (const input of controls()) {
      if (input.type === "file") {
        for (const file of input.files) parts.push("-F " + quote(input.name + "=@" + file.name));
        if (!input.files.length && input.required) parts.push("-F " + quote(input.name + "=@path/to/file"));
      } else if (input.type === "checkbox") {
        parts.push(textPart(input.name, input.checked ? "true" : "false"));
      } else if (input.value !== "") {
        parts.push(textPart(input.name, input.value));
      }
    }
    const fields = checkedOutputs();
    if (fields.length < outputBoxes().length) for (const name of fields) parts.push(textPart("output_fields", name));
    return parts;
  }

  function curlCommand() {
    const lines = ["curl -X POST " + quote(predictUrl)];
    if (controls().some((input) => input.type === "file")) {
      lines.push(...formParts());
    } else {
      lines.push("-H 'Content-Type: application/json'", "-d " + quote(JSON.stringify(jsonBody())));
    }
    return lines.join(" \\\n  ");
  }

  const updateCurl = () => { if ($("try-curl")) $("try-curl").textContent = curlCommand(); };

  // File inputs: a size check, and a preview of images before anything is sent.

  function preview(input) {
    const box = input.closest(".try-field").querySelector(".try-preview");
    for (const img of box.querySelectorAll("img")) URL.revokeObjectURL(img.src);
    box.replaceChildren();
    const limit = Number(input.dataset.maxBytes || Infinity);
    let tooBig = null;
    for (const file of input.files) {
      if (file.size > limit) tooBig = file;
      if (file.type.startsWith("image/")) {
        const img = el("img");
        img.src = URL.createObjectURL(file);
        img.alt = file.name;
        box.append(img);
      }
      box.append(el("span", "try-file-name", file.name + " · " + (file.type || "?") + " · " + formatSize(file.size)));
    }
    input.setCustomValidity(tooBig ? fill(texts.tooLarge, { file: tooBig.name, size: formatSize(limit) }) : "");
  }

  // Errors: the code and message, each detail next to its field.

  function clearErrors() {
    for (const node of form.querySelectorAll("[data-error-for]")) { node.hidden = true; node.textContent = ""; }
    for (const node of form.querySelectorAll(".try-field.invalid")) node.classList.remove("invalid");
    for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
    $("try-error").hidden = true;
    $("try-error").replaceChildren();
  }

  function showFieldError(field, message) {
    for (const node of form.querySelectorAll("[data-error-for]")) {
      const name = node.dataset.errorFor;
      if (field === name || field.startsWith(name + "[") || field.startsWith(name + ".")) {
        node.textContent = message;
        node.hidden = false;
        const wrapper = node.closest(".try-field");
        wrapper.classList.add("invalid");
        const control = wrapper.querySelector("[data-encoding]");
        if (control) control.setAttribute("aria-invalid", "true");
      }
    }
  }

  function renderError(error) {
    const box = $("try-error");
    box.hidden = false;
    const title = el("p", "try-error-title");
    if (error.code) title.append(el("code", "", error.code), " ");
    title.append(el("strong", "", error.message || texts.failed));
    box.append(title);
    const details = Array.isArray(error.details) ? error.details : [];
    if (details.length) {
      const list = el("ul", "errors");
      for (const d of details) {
        const item = el("li");
        if (d && d.field) item.append(el("code", "", String(d.field)), " ");
        item.append(d && d.message ? String(d.message) : JSON.stringify(d));
        list.append(item);
        if (d && d.field && d.message) showFieldError(String(d.field), String(d.message));
      }
      box.append(list);
    } else if (error.details !== undefined && error.details !== null) {
      box.append(el("pre", "json", JSON.stringify(error.details, null, 2)));
    }
  }

  // Outputs: files and images, JSON folded, text as text.

  function safeUrl(raw, allowData) {
    try {
      const url = new URL(raw, location.href);
      const ok = ["http:", "https:"].includes(url.protocol) || (allowData && url.protocol === "data:");
      return ok ? url.href : null;
    } catch { return null; }
  }

  const isFile = (v) => v !== null && typeof v === "object" && typeof v.url === "string" && typeof v.content_type === "string";
  const isDataImage = (v) => typeof v === "string" && /^data:image\//i.test(v);

  function image(src, caption) {
    const figure = el("figure", "try-image");
    const img = el("img");
    img.src = src;
    img.alt = caption;
    figure.append(img, el("figcaption", "muted small", caption));
    return figure;
  }

  function renderFile(file) {
    const caption = file.content_type + " · " + formatSize(file.size);
    const isImage = file.content_type.startsWith("image/");
    const src = safeUrl(file.url, false);
    if (src && isImage) return image(src, caption);
    const link = el("a", "try-download", fill(texts.download, { what: caption }));
    if (src) link.href = src;
    link.download = "";
    return link;
  }

  function folded(value) {
    const details = el("details", "try-json");
    const compact = JSON.stringify(value);
    details.append(
      el("summary", "", compact.length > 80 ? compact.slice(0, 77) + "…" : compact),
      el("pre", "json", JSON.stringify(value, null, 2)),
    );
    return details;
  }

  function renderValue(value) {
    if (isFile(value)) return renderFile(value);
    if (isDataImage(value)) return image(safeUrl(value, true) || "", value.slice(5, value.indexOf(";")));
    if (Array.isArray(value) && value.length && value.every((v) => isFile(v) || isDataImage(v))) {
      const gallery = el("div", "try-gallery");
      for (const item of value) gallery.append(renderValue(item));
      return gallery;
    }
    if (typeof value === "string") return el("pre", "try-text", value);
    if (value === null || typeof value !== "object") return el("p", "try-scalar", String(value));
    return folded(value);
  }

  function renderOutputs(outputs) {
    const view = $("try-view");
    const records = Array.isArray(outputs) ? outputs : [outputs];
    records.forEach((record, index) => {
      if (record === null || typeof record !== "object") return;
      for (const [name, value] of Object.entries(record)) {
        const card = el("div", "try-output-value");
        card.append(el("h3", "", records.length > 1 ? name + " [" + index + "]" : name), renderValue(value));
        view.append(card);
      }
    });
  }

  function renderStatus(response, elapsed, body) {
    const status = $("try-status");
    status.replaceChildren();
    const ok = response.ok ? "try-badge-ok" : "try-badge-bad";
    status.append(el("span", "try-badge " + ok, String(response.status) + " " + response.statusText));
    status.append(el("span", "try-stat", fill(texts.latency, { ms: Math.round(elapsed) })));
    const id = response.headers.get("X-Request-Id") || (body && body.request_id);
    if (id) {
      const label = fill(texts.request, { id });
      let node = el("code", "", label);
      if (form.dataset.linkRequests === "true") {
        node = el("a", "try-request", label);
        node.href = form.dataset.requestsUrl + encodeURIComponent(id);
      }
      status.append(node);
    }
    const version = response.headers.get("X-Model-Version");
    if (version) status.append(el("span", "try-badge", version));
  }

  function showResponse(response, text, elapsed) {
    let body = null;
    try { body = JSON.parse(text); } catch { body = null; }
    renderStatus(response, elapsed, body);
    if (response.ok && body && "outputs" in body) renderOutputs(body.outputs);
    else if (!response.ok) renderError((body && body.error) || { message: response.statusText || texts.failed });
    const raw = el("details", "try-json");
    raw.append(el("summary", "", texts.body), el("pre", "json", body === null ? text : JSON.stringify(body, null, 2)));
    $("try-view").append(raw);
  }

  function setBusy(busy) {
    $("try-run").disabled = busy;
    $("try-busy").hidden = !busy;
    $("try-result").setAttribute("aria-busy", String(busy));
    if (busy) $("try-view").replaceChildren();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    setBusy(true);
    const started = performance.now();
    try {
      const headers = { Accept: "application/json" };
      if (csrf) headers["X-CSRF-Token"] = csrf.content;
      const response = await fetch(predictUrl, { method: "POST", body: formData(), headers, credentials: "same-origin" });
      showResponse(response, await response.text(), performance.now() - started);
    } catch (error) {
      $("try-status").replaceChildren(el("span", "try-badge try-badge-bad", texts.network));
      renderError({ message: String((error && error.message) || error) });
    } finally {
      setBusy(false);
    }
  });

  form.addEventListener("reset", () => setTimeout(() => {
    for (const input of form.querySelectorAll('input[type="file"]')) preview(input);
    clearErrors();
    updateCurl();
  }));
  form.addEventListener("change", (event) => {
    if (event.target.type === "file") preview(event.target);
    updateCurl();
  });
  form.addEventListener("input", updateCurl);
  form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  for (const input of form.querySelectorAll('input[type="file"]')) preview(input);
  updateCurl();
})();
