"""The /docs page: renders /openapi.json with a little vanilla JavaScript, no CDN, no build.

It works offline and behind firewalls. Everything taken from the description is inserted as
text (``textContent``), never as HTML.
"""

from __future__ import annotations

DOCS_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>timefuse API</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 64rem;
         padding: 1rem 1.5rem; color: #1d232a; }
  h1 { margin-bottom: .2rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ccd; }
  code, pre, .path { font-family: ui-monospace, monospace; font-size: 13px; }
  pre { background: #f4f5f8; padding: .6rem; overflow-x: auto; }
  details.op { border: 1px solid #d5d8e0; border-radius: 6px; margin: .5rem 0; }
  details.op > summary { cursor: pointer; padding: .45rem .6rem; }
  details.op > div { padding: 0 .9rem .6rem; }
  .method { display: inline-block; min-width: 4.2rem; font-weight: 700; }
  .GET { color: #1565c0; } .POST { color: #2e7d32; } .DELETE { color: #c62828; }
  .role { float: right; color: #667; font-size: 13px; }
  table { border-collapse: collapse; width: 100%; margin: .3rem 0; }
  td, th { text-align: left; border-bottom: 1px solid #e3e5ea; padding: .2rem .4rem;
           vertical-align: top; font-size: 13px; }
  #status { color: #a33; }
</style>
</head>
<body>
<h1>timefuse API</h1>
<p id="intro"></p>
<p>
  <label>API key <input id="key" type="password" size="40" autocomplete="off"></label>
  <button id="load">Load</button> <span id="status"></span>
</p>
<div id="content"></div>
<script>
"use strict";
const $ = (tag, text, cls) => {
  const el = document.createElement(tag);
  if (text !== undefined) el.textContent = text;
  if (cls) el.className = cls;
  return el;
};
let spec = null;

function refName(ref) { return ref.split("/").pop(); }

function describe(schema, depth) {
  // A one-line reading of a schema: its type, reference, constraints.
  if (!schema || Object.keys(schema).length === 0) return "any JSON value";
  if (schema.$ref) return refName(schema.$ref);
  if (schema.anyOf) return schema.anyOf.map(s => describe(s, depth)).join(" | ");
  let text = schema.type || "any";
  if (schema.type === "array" && schema.items) text = "array of " + describe(schema.items, depth);
  if (schema.type === "object" && schema.additionalProperties)
    text = "object of " + describe(schema.additionalProperties, depth);
  const bounds = ["format", "minimum", "maximum", "minLength", "maxLength", "minItems",
                  "maxItems", "default", "enum"].filter(k => k in schema)
                  .map(k => k + " " + JSON.stringify(schema[k]));
  return bounds.length ? text + " (" + bounds.join(", ") + ")" : text;
}

function schemaTable(schema) {
  const resolved = schema.$ref ? spec.components.schemas[refName(schema.$ref)] : schema;
  const wrap = $("div");
  wrap.append($("div", describe(schema, 0)));
  if (!resolved || !resolved.properties) return wrap;
  const required = new Set([...(resolved.required || []), ...(schema.required || [])]);
  const table = $("table");
  const head = $("tr");
  ["field", "type", "required", "meaning"].forEach(h => head.append($("th", h)));
  table.append(head);
  for (const [name, prop] of Object.entries(resolved.properties)) {
    const row = $("tr");
    row.append($("td", name, "path"), $("td", describe(prop, 1)),
               $("td", required.has(name) ? "yes" : ""), $("td", prop.description || ""));
    table.append(row);
  }
  wrap.append(table);
  return wrap;
}

function operation(path, method, op) {
  const box = $("details", undefined, "op");
  const head = $("summary");
  head.append($("span", method.toUpperCase(), "method " + method.toUpperCase()),
              $("span", path, "path"), $("span", "  " + (op.summary || "")),
              $("span", "role: " + (op["x-timefuse-role"] || "?"), "role"));
  box.append(head);
  const body = $("div");
  if (op.description) body.append($("p", op.description));
  for (const p of op.parameters || []) {
    const meaning = p.description || p.schema.description;
    body.append($("p", p.in + " parameter " + p.name + (p.required ? "" : " (optional)") +
                       ": " + describe(p.schema, 0) + (meaning ? " — " + meaning : "")));
  }
  if (op.requestBody) {
    body.append($("h4", "Request body (application/json)"));
    body.append(schemaTable(op.requestBody.content["application/json"].schema));
  }
  body.append($("h4", "Responses"));
  for (const [status, answer] of Object.entries(op.responses)) {
    const media = Object.keys(answer.content || {})[0] || "";
    const schema = media ? answer.content[media].schema : {};
    body.append($("p", status + " " + media + " — " + answer.description));
    if (status.startsWith("2")) body.append(schemaTable(schema));
  }
  box.append(body);
  return box;
}

function render() {
  const content = document.getElementById("content");
  content.replaceChildren();
  document.getElementById("intro").textContent =
    "version " + spec.info.version + ". " + spec.info.description;
  const byTag = new Map();
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const tag = (op.tags || ["other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operation(path, method, op));
    }
  }
  for (const [tag, ops] of byTag) { content.append($("h2", tag), ...ops); }
  content.append($("h2", "Schemas"));
  for (const [name, schema] of Object.entries(spec.components.schemas)) {
    const box = $("details", undefined, "op");
    box.append($("summary", name + (schema.description ? " — " + schema.description : "")));
    const inner = $("div");
    inner.append(schemaTable({$ref: "#/components/schemas/" + name}));
    box.append(inner);
    content.append(box);
  }
}

async function load() {
  const status = document.getElementById("status");
  const key = document.getElementById("key").value.trim();
  sessionStorage.setItem("timefuse-key", key);
  const headers = key ? {Authorization: "Bearer " + key} : {};
  status.textContent = "loading…";
  try {
    const answer = await fetch("openapi.json", {headers});
    if (answer.status === 401) { status.textContent = "this server needs an API key"; return; }
    if (!answer.ok) { status.textContent = "failed: HTTP " + answer.status; return; }
    spec = await answer.json();
    status.textContent = "";
    render();
  } catch (error) {
    status.textContent = "failed: " + error;
  }
}

document.getElementById("key").value = sessionStorage.getItem("timefuse-key") || "";
document.getElementById("load").addEventListener("click", load);
load();
</script>
</body>
</html>
"""
