// The console works without this script; it only adds each time in the browser's own zone.
"use strict";
(function () {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
  const day = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "2-digit", day: "2-digit" });
  const clock = new Intl.DateTimeFormat(undefined, {
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
  });
  function localize(el) {
    const moment = new Date(el.getAttribute("datetime"));
    if (isNaN(moment) || moment.getTimezoneOffset() === 0 && zone === "UTC") return;
    const utcDay = el.getAttribute("datetime").slice(0, 10);
    const parts = day.formatToParts(moment);
    const get = (type) => (parts.find((p) => p.type === type) || {}).value;
    const localDay = `${get("year")}-${get("month")}-${get("day")}`;
    const span = document.createElement("span");
    span.className = "local";
    span.textContent = (localDay !== utcDay ? localDay + " " : "") + clock.format(moment);
    el.after(span);
  }
  document.querySelectorAll("time[datetime]").forEach(localize);
  const note = document.querySelector(".zone-note");
  if (note && zone !== "UTC") note.textContent = ` and, beside each, in your browser's zone (${zone})`;
})();
