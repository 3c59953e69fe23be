// The history page. Its filter form sends only the filters that are set, so the URL htmx pushes is short and
// can be shared; the notice of who is rating and the header's rater field stay in step both ways.
(() => {
  "use strict";

  document.addEventListener("htmx:configRequest", (event) => {
    const form = event.detail.elt;
    if (!(form instanceof HTMLFormElement) || form.id !== "history-filters") return;
    const params = event.detail.parameters;
    for (const key of Object.keys(params)) {
      if (params[key] === "") delete params[key];
    }
  });

  const fromPath = (detail, path) => (detail.requestConfig && detail.requestConfig.path || "").split("?")[0] === path;

  // A name set in the notice: the header's field shows it too (the cookie is already set by the response).
  document.addEventListener("htmx:afterSettle", (event) => {
    if (!fromPath(event.detail, "/history/rater")) return;
    const notice = document.getElementById("history-rater");
    const field = document.getElementById("rater");
    if (notice && field instanceof HTMLInputElement && field.type !== "hidden") field.value = notice.dataset.rater || "";
  });

  // A name changed in the header: once stored, the notice says it.
  document.addEventListener("htmx:afterRequest", (event) => {
    const field = event.detail.elt;
    if (!(field instanceof HTMLInputElement) || field.id !== "rater" || !event.detail.successful) return;
    if (document.getElementById("history-rater")) {
      htmx.ajax("GET", "/history/rater", {target: "#history-rater", swap: "outerHTML"});
    }
  });
})();
