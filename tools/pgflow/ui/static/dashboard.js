// pgflow dashboard: draws the Mermaid pictures and keeps a run page live.
// Events come from /events (Server-Sent Events fed by the server's one LISTEN
// connection); on an event for this run the page fetches /runs/<id>/live.
(function () {
  "use strict";
  function draw() {
    if (window.mermaid) {
      window.mermaid.initialize({ startOnLoad: false, securityLevel: "strict" });
      window.mermaid.run({ querySelector: "pre.mermaid:not([data-processed])" });
    }
  }
  draw();
  var marker = document.getElementById("live-state");
  if (!marker || !window.EventSource) { return; }
  var runId = marker.getAttribute("data-run");
  var pending = null;
  function refresh() {
    pending = null;
    fetch("/runs/" + runId + "/live", { headers: { Accept: "text/html" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        var old = document.getElementById("run-live");
        var box = document.createElement("div");
        box.innerHTML = html;
        var fresh = box.querySelector("#run-live");
        if (old && fresh) { old.replaceWith(fresh); draw(); }
        var st = fresh ? fresh.getAttribute("data-status") : "";
        marker.textContent = st === "started" ? "live" : "finished";
      });
  }
  var source = new EventSource("/events?run_id=" + encodeURIComponent(runId));
  source.addEventListener("pgflow", function () {
    if (!pending) { pending = setTimeout(refresh, 150); }
  });
  source.onopen = function () { refresh(); };
})();
