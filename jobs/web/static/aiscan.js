// Live progress of running jobs: polls the same-origin JSON API and updates the marked elements.
// Text goes in with textContent only, so nothing from the API is ever parsed as HTML.
(function () {
  "use strict";
  var FINISHED = ["done", "failed", "cancelled"];
  var ORDER = ["ai_declared", "capture_declared", "fake", "uncertain", "real", "error"];
  var PERIOD_MS = 1500;

  function set(el, name, value) {
    var node = el.querySelector('[data-field="' + name + '"]');
    if (node) node.textContent = value;
  }

  function badges(container, verdicts) {
    var names = Object.keys(verdicts).sort(function (a, b) {
      var ia = ORDER.indexOf(a), ib = ORDER.indexOf(b);
      return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || (a < b ? -1 : 1);
    });
    container.replaceChildren();
    names.forEach(function (name) {
      var span = document.createElement("span");
      span.className = "badge v-" + name;
      span.textContent = name.replace("_", " ") + " " + verdicts[name];
      container.appendChild(span);
    });
  }

  function update(el, job) {
    var counts = job.counts || {};
    var total = counts.total || 0, done = counts.done || 0;
    set(el, "done", String(done));
    set(el, "total", String(total));
    var fill = el.querySelector("svg.bar .fill");
    if (fill) fill.setAttribute("width", String(total ? (100 * done) / total : 0));
    var status = el.querySelector('[data-field="status"]');
    if (status) {
      status.textContent = job.status;
      status.className = "badge s-" + job.status;
    }
    var verdicts = el.querySelector('[data-field="verdicts"]');
    if (verdicts && job.verdicts) badges(verdicts, job.verdicts);
    el.setAttribute("data-status", job.status);
  }

  function poll(el) {
    var id = el.getAttribute("data-job-id");
    fetch("/api/v1/jobs/" + encodeURIComponent(id), { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (job) {
        update(el, job);
        if (FINISHED.indexOf(job.status) >= 0) {
          // The job page shows results, histogram and counts rendered by the server: reload it once.
          if (el.hasAttribute("data-reload-when-done")) window.location.reload();
          return;
        }
        window.setTimeout(function () { poll(el); }, PERIOD_MS);
      })
      .catch(function () { window.setTimeout(function () { poll(el); }, PERIOD_MS * 4); });
  }

  // A file over the server's upload cap is refused by the server with a bare 413; say so before sending it.
  document.querySelectorAll("form[data-max-bytes]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      var max = Number(form.getAttribute("data-max-bytes"));
      var input = form.querySelector('input[type="file"]');
      var file = input && input.files && input.files[0];
      var message = form.querySelector("[data-too-large]");
      if (file && max && file.size > max) {
        event.preventDefault();
        if (message) {
          message.textContent = "This file is " + file.size + " bytes; the server takes at most " + max +
            " bytes (AISCAN_MAX_UPLOAD_BYTES).";
          message.hidden = false;
        }
      } else if (message) {
        message.hidden = true;
      }
    });
  });

  document.querySelectorAll("[data-job-id][data-live]").forEach(function (el) {
    window.setTimeout(function () { poll(el); }, PERIOD_MS);
  });
})();
