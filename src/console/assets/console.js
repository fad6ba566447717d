// Progressive enhancement only: every page works without it. A page that asks for it
// (<body data-refresh="30">) reloads itself, unless the user is typing in a form.
(function () {
  "use strict";
  var secs = parseInt(document.body.getAttribute("data-refresh") || "", 10);
  if (!(secs > 0)) {
    return;
  }
  setInterval(function () {
    var active = document.activeElement;
    var typing = active && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName);
    if (!typing && document.visibilityState === "visible") {
      window.location.reload();
    }
  }, secs * 1000);
})();
