// The console's few behaviours, on top of HTMX: confirmations, and the CSRF token on every fetch it makes.
"use strict";

(function () {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  // A form with `data-confirm` asks first, in the page's own dialog (keyboard: Enter confirms, Esc cancels).
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.confirm || form.dataset.confirmed) return;
    event.preventDefault();
    const dialog = document.getElementById("confirm");
    document.getElementById("confirm-text").textContent = form.dataset.confirm;
    dialog.returnValue = "";
    dialog.onclose = () => {
      if (dialog.returnValue !== "ok") return;
      form.dataset.confirmed = "1";
      form.requestSubmit(event.submitter || undefined);
      delete form.dataset.confirmed;
    };
    dialog.showModal();
    document.getElementById("confirm-ok").focus();
  }, true);

  // `modelport.fetch` is `fetch` with the session's CSRF token, for the API routes the console calls itself.
  window.modelport = {
    csrf,
    fetch(url, options = {}) {
      const headers = new Headers(options.headers || {});
      headers.set("X-CSRF-Token", csrf());
      return fetch(url, { credentials: "same-origin", ...options, headers });
    },
  };
})();
