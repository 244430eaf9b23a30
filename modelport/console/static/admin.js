// The new token page: copy the secret, which is shown this once.
"use strict";

(function () {
  document.addEventListener("click", async (event) => {
    const button = event.target instanceof Element ? event.target.closest("button[data-copy]") : null;
    if (!button) return;
    const field = document.getElementById(button.dataset.copy);
    const said = document.getElementById(button.dataset.copy + "-copied");
    let copied = false;
    try {
      await navigator.clipboard.writeText(field.value);
      copied = true;
    } catch (error) {
      // Without the clipboard API (a page served over plain http): select the text and copy the old way.
      field.focus();
      field.select();
      copied = document.execCommand("copy");
    }
    if (copied && said) said.textContent = button.dataset.copied;
  });

  // A click in the field selects the whole secret, ready to copy by hand.
  document.addEventListener("focusin", (event) => {
    if (event.target instanceof HTMLInputElement && event.target.id === "secret") event.target.select();
  });
})();
