// The dashboard's only script: a confirmation before actions, and the task page's
// live progress over Server-Sent Events. Everything from the server is put into the
// page as text (textContent, attributes of known elements), never as markup.
"use strict";

(function () {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) {
        event.preventDefault();
      }
    });
  }

  const live = document.getElementById("live");
  if (!live || !window.EventSource) {
    return;
  }
  const state = document.getElementById("state");
  const bar = document.getElementById("progress");
  const label = document.getElementById("progress-label");
  const status = document.getElementById("live-status");
  const source = new EventSource(live.dataset.events);

  source.addEventListener("open", function () {
    status.textContent = "live";
  });
  source.addEventListener("error", function () {
    status.textContent = "reconnecting…";
  });
  source.addEventListener("state", function (event) {
    const snapshot = JSON.parse(event.data);
    if (snapshot.ready) {
      // Finished or forgotten: the page itself shows the outcome.
      source.close();
      window.location.reload();
      return;
    }
    state.textContent = snapshot.state;
    state.dataset.state = snapshot.state;
    const meta = document.getElementById("result");
    if (meta && typeof snapshot.result === "string") {
      meta.textContent = snapshot.result;
    }
    if (snapshot.progress) {
      bar.max = snapshot.progress.total;
      bar.value = snapshot.progress.current;
      bar.hidden = false;
      label.textContent = snapshot.progress.label;
    }
  });
})();
