// portok live reload: reloads the page after a successful redeploy (keeping the scroll
// position) and shows a failed redeploy's output in an overlay. Served by the portok proxy;
// talks only to its own origin; one global, window.__portok.
(function () {
  "use strict";
  if (window.__portok) return;
  var portok = (window.__portok = { connected: false, overlay: null });
  var KEY = "__portok_scroll";

  try {
    var saved = sessionStorage.getItem(KEY);
    if (saved) {
      sessionStorage.removeItem(KEY);
      var pos = JSON.parse(saved);
      if (pos.path === location.pathname) {
        var restore = function () { window.scrollTo(pos.x, pos.y); };
        if (document.readyState === "complete") restore();
        else window.addEventListener("load", restore);
      }
    }
  } catch (e) {}

  function reload() {
    try {
      sessionStorage.setItem(KEY, JSON.stringify({ path: location.pathname, x: window.scrollX, y: window.scrollY }));
    } catch (e) {}
    location.reload();
  }

  function hideOverlay() {
    if (portok.overlay) {
      portok.overlay.remove();
      portok.overlay = null;
    }
  }

  // Built with the DOM and CSSOM only: the output is text (never HTML), and nothing here
  // needs 'unsafe-inline' under a Content-Security-Policy.
  function showOverlay(data) {
    hideOverlay();
    var host = document.createElement("portok-overlay");
    var root = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;
    var box = document.createElement("div");
    var s = box.style;
    s.position = "fixed"; s.inset = "0"; s.zIndex = "2147483647"; s.background = "rgba(10,12,16,.92)";
    s.color = "#e6e8ee"; s.font = "14px/1.5 ui-monospace,SFMono-Regular,Menlo,monospace"; s.padding = "2em";
    s.overflow = "auto"; s.boxSizing = "border-box";
    var title = document.createElement("div");
    title.textContent = "portok: redeploy failed, still serving the last good version";
    title.style.color = "#f85149"; title.style.fontWeight = "bold"; title.style.fontSize = "1.1em";
    var msg = document.createElement("div");
    msg.textContent = data.message || "";
    msg.style.margin = ".75em 0";
    var pre = document.createElement("pre");
    pre.textContent = (data.tail || []).join("\n");
    pre.style.whiteSpace = "pre-wrap"; pre.style.background = "#0b0c10"; pre.style.padding = "1em";
    pre.style.borderRadius = "6px"; pre.style.margin = "0";
    var close = document.createElement("button");
    close.textContent = "×";
    close.title = "dismiss";
    var c = close.style;
    c.position = "absolute"; c.top = "1em"; c.right = "1em"; c.background = "none"; c.border = "0";
    c.color = "#8b93a7"; c.fontSize = "1.5em"; c.cursor = "pointer";
    close.addEventListener("click", hideOverlay);
    box.appendChild(close); box.appendChild(title); box.appendChild(msg); box.appendChild(pre);
    root.appendChild(box);
    (document.body || document.documentElement).appendChild(host);
    portok.overlay = host;
  }

  function connect() {
    if (!window.EventSource) return;
    var es = new EventSource("/__portok/events");
    portok.source = es;
    es.onopen = function () { portok.connected = true; };
    es.onerror = function () { portok.connected = false; }; // EventSource retries by itself
    es.addEventListener("redeployed", function () { hideOverlay(); reload(); });
    es.addEventListener("failed", function (e) {
      try { showOverlay(JSON.parse(e.data)); } catch (err) {}
    });
  }
  portok.showOverlay = showOverlay;
  portok.hideOverlay = hideOverlay;
  connect();
})();
