// The storage pages' behaviours: uploads with a progress bar per file, and the copy button of a presigned link.
//
// Each file goes to the files API (`PUT /api/v1/storage/{bucket}/objects/{key}`) with XMLHttpRequest, whose
// `upload.onprogress` reports the bytes sent; the session cookie authenticates it and `X-CSRF-Token` (the
// page's token) lets the cookie count for a PUT. Files go one after another; once all are done, the listing
// is read again. Names, messages and keys are only ever set as text.
"use strict";

(function () {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
  const encodeKey = (key) => key.split("/").map(encodeURIComponent).join("/");

  function row(list, file, waiting) {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.className = "upload-name";
    name.textContent = file.name;
    const bar = document.createElement("progress");
    bar.max = Math.max(file.size, 1);
    bar.value = 0;
    bar.setAttribute("aria-label", file.name);
    const state = document.createElement("span");
    state.className = "upload-state muted";
    state.textContent = waiting;
    item.append(name, bar, state);
    list.append(item);
    return { item, bar, state };
  }

  function problem(xhr) {
    let message = xhr.statusText;
    try {
      const body = JSON.parse(xhr.responseText);
      if (body && body.error && body.error.message) message = body.error.message;
    } catch (_) {
      // not JSON (a proxy's page): the status line says enough
    }
    return `${xhr.status} ${message}`.trim();
  }

  function send(form, file, shown) {
    const texts = form.dataset;
    return new Promise((resolve) => {
      const failed = (message) => {
        shown.item.classList.add("failed");
        shown.bar.hidden = true;
        shown.state.className = "upload-state problem";
        shown.state.textContent = message;
        resolve(false);
      };
      const xhr = new XMLHttpRequest();
      xhr.open("PUT", texts.api + encodeKey(texts.prefix + file.name));
      xhr.setRequestHeader("X-CSRF-Token", csrf());
      xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
      xhr.upload.onprogress = (event) => {
        if (event.lengthComputable) {
          shown.bar.max = Math.max(event.total, 1);
          shown.bar.value = event.loaded;
        }
      };
      xhr.onload = () => {
        if (xhr.status >= 200 && xhr.status < 300) {
          shown.bar.value = shown.bar.max;
          shown.item.classList.add("done");
          shown.state.className = "upload-state status status-ok";
          shown.state.textContent = texts.done;
          resolve(true);
        } else {
          failed(problem(xhr));
        }
      };
      xhr.onerror = () => failed(texts.network);
      xhr.onabort = () => failed(texts.network);
      shown.state.textContent = texts.sending;
      xhr.send(file);
    });
  }

  function refresh() {
    if (window.htmx && document.getElementById("listing")) {
      window.htmx.ajax("GET", window.location.href, { target: "#listing", select: "#listing", swap: "outerHTML" });
    } else {
      window.location.reload();
    }
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-upload")) return;
    event.preventDefault();
    const input = form.querySelector('input[type="file"]');
    const files = Array.from(input.files || []);
    if (!files.length) return;
    const list = document.getElementById(form.dataset.list);
    list.replaceChildren();
    const rows = files.map((file) => row(list, file, form.dataset.waiting));
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    let stored = 0;
    try {
      for (let i = 0; i < files.length; i += 1) {
        if (await send(form, files[i], rows[i])) stored += 1;
      }
    } finally {
      button.disabled = false;
      input.value = "";
    }
    if (stored) refresh();
  });

  document.addEventListener("click", async (event) => {
    const button = event.target instanceof Element ? event.target.closest("button[data-copy]") : null;
    if (!button) return;
    const field = document.getElementById(button.dataset.copy);
    field.select();
    try {
      await navigator.clipboard.writeText(field.value);
    } catch (_) {
      document.execCommand("copy"); // older browsers, or a page not served over HTTPS
    }
    const label = button.dataset.label || button.textContent;
    button.dataset.label = label;
    button.textContent = button.dataset.copied;
    setTimeout(() => { button.textContent = label; }, 2000);
  });
})();
