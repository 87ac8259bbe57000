// smart-maintenance web UI: forms post JSON to the API, a live banner from server-sent events.
// No framework and no build step; served from /static with the pages (no CDN).
"use strict";

function formData(form, submitter) {
  const data = {};
  for (const el of form.elements) {
    if (!el.name || el.type === "submit" || (el.tagName === "BUTTON")) continue;
    let v = el.value;
    if (el.dataset.utc && v) v = v + (v.length === 16 ? ":00" : "") + "Z";
    if (el.dataset.list) v = v.split(",").map((s) => s.trim()).filter(Boolean);
    if (v === "" && el.name !== "note") continue;
    data[el.name] = v;
  }
  if (submitter && submitter.name) data[submitter.name] = submitter.value;
  return data;
}

async function post(url, data, method) {
  const r = await fetch(url, {method: method || "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify(data)});
  let body = {};
  try { body = await r.json(); } catch (e) { body = {}; }
  return {ok: r.ok, status: r.status, body};
}

document.addEventListener("submit", async (ev) => {
  const form = ev.target;
  const out = form.querySelector(".result");
  if (form.id === "login") {
    ev.preventDefault();
    const r = await post("/ui/session", {key: form.elements.key.value});
    if (r.ok) { location.assign(form.dataset.next || "/ui/"); return; }
    out.textContent = r.body.detail || ("sign-in failed: " + r.status);
    return;
  }
  if (!form.dataset.post) return;
  ev.preventDefault();
  for (const b of form.querySelectorAll("button")) b.disabled = true;
  const r = await post(form.dataset.post, formData(form, ev.submitter), form.dataset.method);
  for (const b of form.querySelectorAll("button")) b.disabled = false;
  if (r.ok) {
    out.textContent = "done";
    out.className = "result ok";
    if (form.dataset.reload) setTimeout(() => location.reload(), 300);
  } else {
    const d = r.body.detail;
    out.textContent = (typeof d === "string" ? d : JSON.stringify(d)) || ("error " + r.status);
    out.className = "result warn";
  }
});

document.addEventListener("click", async (ev) => {
  if (ev.target.id === "logout") { await post("/ui/logout", {}); location.assign("/ui/login"); }
});

if (document.querySelector("nav") && window.EventSource) {
  const live = document.getElementById("live");
  let n = 0;
  const es = new EventSource("/api/events");
  const show = (ev) => {
    n += 1;
    const d = JSON.parse(ev.data);
    live.hidden = false;
    live.textContent = n + " change(s) since this page loaded (last: " + ev.type + " on " + d.asset_id +
      ", " + d.status + "). ";
    const a = document.createElement("a");
    a.href = location.href; a.textContent = "Reload";
    live.appendChild(a);
  };
  for (const kind of ["alarm", "case", "work_order"]) es.addEventListener(kind, show);
}
