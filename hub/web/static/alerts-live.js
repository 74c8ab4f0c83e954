// Hedgerow alert queue: announce new alerts without reshuffling the list under the reader.
// Every 30 s it asks /api/alerts/new how many open alerts arrived since the page was drawn
// and says so in the page's aria-live region, with a link that reloads the queue. The list
// itself never changes. Without JavaScript the page works as before (reload to see more).
(function () {
  "use strict";
  var region = document.getElementById("new-alerts");
  if (!region) {
    return;
  }
  var since = parseInt(region.getAttribute("data-since") || "0", 10);
  var reload = region.getAttribute("data-reload") || "/alerts";
  var shown = 0;

  function announce(count) {
    if (count === shown) {
      return;
    }
    shown = count;
    region.textContent = "";
    var link = document.createElement("a");
    link.href = reload;
    link.textContent = count === 1 ? "1 new alert" : count + " new alerts";
    region.appendChild(link);
    region.appendChild(document.createTextNode(": show the updated queue."));
  }

  function poll() {
    fetch("/api/alerts/new?since_id=" + encodeURIComponent(since), {
      credentials: "same-origin",
      headers: { Accept: "application/json" }
    })
      .then(function (response) {
        return response.ok ? response.json() : null;
      })
      .then(function (data) {
        if (data && data.count > 0) {
          announce(data.count);
        }
      })
      .catch(function () {
        // The hub may be restarting: try again at the next tick.
      });
  }

  window.setInterval(poll, 30000);
})();
