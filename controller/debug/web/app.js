// meshfed's web view: reads the controller's debug API (/debug/mesh)
// every second and redraws. Read-only. Every text from the mesh — names
// may come from another cluster — goes in as text, never as markup.
"use strict";

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function fill(id, rows) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren(...rows);
}

function row(cells, data) {
  const tr = document.createElement("tr");
  tr.append(...cells);
  for (const [k, v] of Object.entries(data || {})) tr.dataset[k] = v;
  return tr;
}

function draw(v) {
  document.getElementById("cluster").textContent = v.cluster;
  document.getElementById("updated").textContent = "as served by " + v.cluster + "'s controller at " + new Date().toLocaleTimeString();
  const members = v.federated ? v.federation.members : [];
  fill("clusters", members.map(m => {
    const state = m.state + (m.stale ? ",stale" : "") + ((m.withdrawn || []).length ? ",withdrawn" : "");
    const note = [m.reason, m.unreachable].filter(Boolean).join("; ");
    return row([cell(m.name + (m.local ? " (this)" : "")), cell(state, m.state), cell(m.network || "-"),
      cell(String(m.catalogVersion)), cell(String(m.serviceCount)), cell((m.gateways || []).join(", ") || "-"), cell(note)],
      {member: m.name, state: m.state});
  }));
  fill("services", v.services.map(s => row([cell(s.name), cell(s.cluster), cell(String(s.endpoints))], {service: s.name, cluster: s.cluster})));
  fill("imports", v.imports.map(i => row([cell(i.name), cell(i.clusters.join(", "))], {service: i.name})));
  document.getElementById("permissive").textContent = v.permissive ?
    "Permissive mode: every meshed workload may call every other." : "Deny by default: only what a TrafficTarget allows.";
  fill("policies", v.policies.map(p => row([cell(p.name), cell((p.sources || []).join(", ")), cell(p.destination), cell((p.routes || []).join("; "))], {policy: p.name})));
  const splits = [];
  for (const s of v.splits) {
    for (const b of s.backends) {
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = Math.round(b.share * 200) + "px";
      const share = cell(" " + Math.round(b.share * 100) + "%");
      share.prepend(bar);
      splits.push(row([cell(s.name), cell(s.service), cell(b.service + (b.cluster ? " @ " + b.cluster : "")), cell(String(b.weight)), share],
        {split: s.name, backend: b.service + (b.cluster ? "@" + b.cluster : ""), weight: String(b.weight)}));
    }
  }
  fill("splits", splits);
}

async function refresh() {
  try {
    const r = await fetch("/debug/mesh", {cache: "no-store"});
    if (!r.ok) throw new Error(r.status + " " + await r.text());
    draw(await r.json());
  } catch (e) {
    document.getElementById("updated").textContent = "cannot read the controller: " + e.message;
  }
}

refresh();
setInterval(refresh, 1000);
