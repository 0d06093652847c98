// The console's pages, one function per view; each reads the console API and draws.

import { h, api, show, time, every, ApiError } from "./app.js";
import { funnel, channels, channelName, geofencePlot } from "./draw.js";

const fmtJson = (v) => h("pre", {}, JSON.stringify(v, null, 2));

function table(headers, rows, attrs = {}) {
  return h("div", { class: "table-wrap" }, h("table", { class: "responsive", ...attrs },
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c, i) => h("td", { "data-label": headers[i] }, c)))))));
}

function channelBlock(list) {
  if (!list) return h("p", { class: "muted channels" }, "By channel: not recorded (the push is no longer live on this node).");
  const rows = list.filter((c) => c.sent > 0 || c.channel === "pigeon");
  return h("div", { class: "channels" }, channels(rows),
    h("p", { class: "muted" }, rows.map((c) => `${channelName(c.channel)}: ${c.delivered} delivered of ${c.sent} sent`).join(" · ")));
}

async function pushes() {
  const list = h("div", { class: "grid", id: "push-list" });
  show(h("div", { class: "row" }, h("h1", { class: "grow" }, "Pushes"),
    h("a", { href: "#/send" }, "Send a push")), list);
  every(2000, async () => {
    if (!document.body.contains(list)) return;
    const { pushes } = await api("GET", "pushes?limit=30");
    list.replaceChildren(...(pushes.length ? pushes.map((p) =>
      h("article", { class: "card push", "data-msg-id": p.msg_id },
        h("div", { class: "row" },
          h("a", { class: "grow", href: `#/push/${p.msg_id}` }, h("strong", {}, `Push ${p.msg_id}`)),
          h("span", { class: "muted" }, time(p.sent_ms))),
        p.group ? h("p", { class: "muted" }, `group ${p.group}`) : null,
        funnel(p.funnel, `Push ${p.msg_id}`),
        channelBlock(p.channels))) : [h("p", { class: "muted" }, "No pushes yet.")]));
  });
}

function contentSummary(p) {
  const n = p.content?.notifications ?? {};
  const parts = [];
  for (const [platform, note] of Object.entries(n)) {
    parts.push(h("dt", {}, `Notification (${platform})`),
      h("dd", {}, [note.title ? h("strong", {}, note.title + " — ") : null, note.body ?? note.alert ?? ""]));
  }
  if (p.content?.message) parts.push(h("dt", {}, "Message"), h("dd", {}, p.content.message.content ?? JSON.stringify(p.content.message)));
  return h("dl", { class: "kv" }, parts);
}

async function push(msgId) {
  const root = h("div", { id: "push-page" });
  show(h("p", {}, h("a", { href: "#/pushes" }, "← Pushes")), root);
  const status = h("div", { role: "status", id: "recall-status" });
  every(2000, async () => {
    if (!document.body.contains(root)) return;
    const p = await api("GET", `pushes/${encodeURIComponent(msgId)}`);
    const recall = h("button", { type: "button", class: "danger", id: "recall", disabled: !!p.recalled_ms,
      onclick: async () => {
        if (!confirm(`Recall push ${p.msg_id}? Devices that have not got it never will.`)) return;
        try {
          await api("POST", `pushes/${p.msg_id}/recall`);
          status.className = "ok-box";
          status.textContent = "Recalled.";
        } catch (e) {
          status.className = "error-box";
          status.textContent = e.message;
        }
      } }, p.recalled_ms ? "Recalled" : "Recall");
    const timeline = h("ul", { class: "timeline" },
      h("li", {}, h("strong", {}, "Accepted"), time(p.sent_ms)),
      h("li", {}, h("strong", {}, "Sent"), p.funnel.sent > 0 ? `${p.funnel.sent} devices` : "not yet"),
      h("li", {}, h("strong", {}, "Expires"), time(p.expires_ms)),
      p.recalled_ms ? h("li", {}, h("strong", {}, "Recalled"), time(p.recalled_ms)) : null,
      p.overridden_by ? h("li", {}, h("strong", {}, "Overridden"), `by push ${p.overridden_by}`) : null);
    const undelivered = p.undelivered.length
      ? table(["Reason", "Devices"], p.undelivered.map((u) => [u.reason, String(u.count)]), { id: "undelivered" })
      : h("p", { class: "muted", id: "undelivered" }, "Every target got it.");
    root.replaceChildren(
      h("div", { class: "row" }, h("h1", { class: "grow" }, `Push ${p.msg_id}`), recall),
      status,
      h("div", { class: "grid" },
        h("section", { class: "card" }, h("h2", {}, "Funnel"), funnel(p.funnel, "Funnel"),
          h("h2", {}, "By channel"), channelBlock(p.channels),
          h("h2", {}, "Undelivered"), undelivered),
        h("section", { class: "card" }, h("h2", {}, "Timeline"), timeline,
          h("h2", {}, "Content"), contentSummary(p),
          h("h2", {}, "Audience"), fmtJson(p.audience), h("p", {}, `Platforms: ${JSON.stringify(p.platforms)}`),
          h("h2", {}, "Options"), fmtJson(p.policy))),
      p.by_platform.length ? h("section", { class: "card" }, h("h2", {}, "By platform"),
        h("div", { class: "grid" }, p.by_platform.map((b) => h("div", {}, h("h3", {}, b.platform), funnel(b.funnel, b.platform))))) : null);
  });
}

function field(name, label, input, hint) {
  return h("label", { "data-field": name }, label, hint ? h("span", { class: "hint" }, hint) : null, input,
    h("span", { class: "field-error", id: `error-${name}`, role: "alert", hidden: true }));
}

async function send() {
  const result = h("div", { id: "send-result", role: "status" });
  const form = h("form", { class: "stack", id: "send-form", novalidate: true },
    field("platform", "Platform", h("select", { name: "platform", id: "platform" },
      ["all", "android", "ios", "hmos", "quickapp"].map((p) => h("option", { value: p }, p)))),
    field("audience", "Audience", h("div", { class: "row" },
      h("select", { name: "audience_kind", id: "audience_kind", "aria-label": "Audience kind" },
        [["all", "Everyone"], ["tag", "Tags"], ["alias", "Aliases"], ["registration_id", "Registration ids"]]
          .map(([v, l]) => h("option", { value: v }, l))),
      h("input", { name: "audience_values", id: "audience_values", class: "grow", placeholder: "comma-separated", "aria-label": "Audience values" }))),
    field("title", "Title", h("input", { name: "title", id: "title" }), "Android notification title"),
    field("alert", "Notification text", h("textarea", { name: "alert", id: "alert", rows: 2 })),
    field("message", "Message (in-app, not shown)", h("textarea", { name: "message", id: "message", rows: 2 })),
    field("time_to_live", "Time to live (s)", h("input", { name: "time_to_live", id: "time_to_live", inputmode: "numeric", placeholder: "86400" })),
    h("div", { class: "field-error", id: "error-form", role: "alert", hidden: true }),
    h("button", { type: "submit", id: "send" }, "Send push"), result);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const e of form.querySelectorAll(".field-error")) e.hidden = true;
    for (const e of form.querySelectorAll("[aria-invalid]")) e.removeAttribute("aria-invalid");
    result.replaceChildren();
    const fd = new FormData(form);
    const body = Object.fromEntries(fd.entries());
    try {
      const { msg_id } = await api("POST", "pushes", body);
      result.replaceChildren(h("p", { class: "ok-box" }, "Sent: ", h("a", { href: `#/push/${msg_id}`, id: "sent-link" }, `push ${msg_id}`)));
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      const name = e.field && form.querySelector(`#error-${e.field}`) ? e.field : "form";
      const box = form.querySelector(`#error-${name}`);
      box.textContent = e.message;
      box.hidden = false;
      const input = form.querySelector(`[data-field=${name}] input, [data-field=${name}] textarea, [data-field=${name}] select`);
      if (input) { input.setAttribute("aria-invalid", "true"); input.setAttribute("aria-describedby", `error-${name}`); }
    }
  });
  show(h("h1", {}, "Send a push"), h("div", { class: "card" }, form));
}

function deviceCard(d) {
  const tokens = Object.entries(d.vendor_tokens);
  return h("article", { class: "card device", "data-rid": d.registration_id },
    h("div", { class: "row" }, h("strong", { class: "grow" }, h("code", {}, d.registration_id)),
      h("span", { class: `badge ${d.online ? "online" : "offline"}` }, d.online ? "Online now" : "Offline")),
    h("dl", { class: "kv" },
      h("dt", {}, "Platform"), h("dd", {}, d.platform),
      h("dt", {}, "Last seen"), h("dd", {}, d.online ? "now" : time(d.last_seen_ms)),
      h("dt", {}, "Alias"), h("dd", {}, d.alias ?? "—"),
      h("dt", {}, "Tags"), h("dd", {}, d.tags.length ? d.tags.join(", ") : "—"),
      h("dt", {}, "Vendor tokens"), h("dd", {}, tokens.length ? tokens.map(([k, v]) => `${channelName(k)} ${v}`).join(" · ") : "none"),
      h("dt", {}, "Badge"), h("dd", {}, String(d.badge)),
      h("dt", {}, "Registered"), h("dd", {}, time(d.created_ms))));
}

async function devices() {
  const out = h("div", { id: "device-results" });
  const form = h("form", { class: "row", id: "device-search" },
    h("select", { name: "by", id: "device-by", "aria-label": "Find by" },
      [["registration_id", "Registration id"], ["alias", "Alias"], ["tag", "Tag"]].map(([v, l]) => h("option", { value: v }, l))),
    h("input", { name: "q", id: "device-q", class: "grow", required: true, "aria-label": "Search" }),
    h("button", { type: "submit", id: "device-find" }, "Find"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const fd = new FormData(form);
    try {
      const r = await api("GET", `devices?by=${encodeURIComponent(fd.get("by"))}&q=${encodeURIComponent(fd.get("q"))}`);
      out.replaceChildren(h("p", { class: "muted" }, `${r.total} found${r.total > r.devices.length ? `, ${r.devices.length} shown` : ""}`),
        h("div", { class: "grid" }, r.devices.map(deviceCard)));
    } catch (e) {
      out.replaceChildren(h("div", { class: "error-box", role: "alert" }, e.message));
    }
  });
  show(h("h1", {}, "Devices"), form, out);
}

async function callbacks() {
  const root = h("div", { id: "callbacks" });
  const status = h("div", { role: "status", id: "replay-status" });
  show(h("h1", {}, "Callbacks"), status, root);
  const load = async () => {
    const { callbacks } = await api("GET", "callbacks");
    root.replaceChildren(...(callbacks.length ? callbacks.map((c) => h("section", { class: "card endpoint", "data-endpoint": c.id },
      h("div", { class: "row" }, h("strong", { class: "grow" }, `#${c.id} `, h("code", {}, c.url)),
        h("span", { class: "badge" }, c.disabled ? "Disabled" : c.failing_since_ms ? "Failing" : "OK")),
      h("dl", { class: "kv" },
        h("dt", {}, "Format"), h("dd", {}, c.format),
        h("dt", {}, "Commands"), h("dd", {}, c.commands.join(", ") || "all"),
        h("dt", {}, "Lag"), h("dd", {}, `${c.pending_batches} batches pending${c.pending_since_ms ? `, oldest since ${time(c.pending_since_ms)}` : ""}`),
        h("dt", {}, "Failing since"), h("dd", {}, c.failing_since_ms ? time(c.failing_since_ms) : "—")),
      h("h2", {}, `Dead letters (${c.dead.length})`),
      c.dead.length ? table(["Delivery", "Command", "Events", "Attempts", "First try", "Last error", ""],
        c.dead.map((d) => [h("code", {}, d.delivery_id), d.command, String(d.events), String(d.attempts), time(d.first_ms), d.last_error,
          h("button", { type: "button", class: "replay", "data-delivery": d.delivery_id, onclick: async (ev) => {
            ev.target.disabled = true;
            try {
              await api("POST", `callbacks/${c.id}/dead/${encodeURIComponent(d.delivery_id)}/replay`);
              status.className = "ok-box";
              status.textContent = `Replaying ${d.delivery_id}.`;
              await load();
            } catch (e) {
              status.className = "error-box";
              status.textContent = e.message;
            }
          } }, "Replay")])) : h("p", { class: "muted" }, "None."))) : [h("p", { class: "muted" }, "No callback endpoints. Add one with POST /v3/callbacks.")]));
  };
  every(3000, () => document.body.contains(root) && load());
}

async function schedules() {
  const { schedules } = await api("GET", "schedules");
  show(h("h1", {}, "Schedules"), schedules.length
    ? table(["Id", "Name", "Door", "Enabled", "Next", "Trigger"], schedules.map((s) =>
      [h("code", {}, s.schedule_id), s.name, s.door, s.enabled ? "yes" : "no", time(s.next_ms), fmtJson(s.trigger)]))
    : h("p", { class: "muted" }, "No schedule will fire."));
}

async function vendors() {
  const v = await api("GET", "vendors");
  const list = v.vendors ?? [];
  show(h("h1", {}, "Vendors"),
    h("section", { class: "card" }, h("h2", {}, "Web Push VAPID public key"), h("pre", { id: "vapid" }, v.webpush_vapid_public_key ?? "—")),
    h("section", { class: "card" }, h("h2", {}, "Credentials (secrets masked)"),
      list.length ? table(["Vendor", "Updated", "Credentials"], list.map((c) =>
        [channelName(c.vendor), time(c.updated_ms), fmtJson(c.credentials)]))
        : h("p", { class: "muted" }, "No vendor credentials: pushes go over Pigeon's connection only.")));
}

async function segments() {
  const { segments } = await api("GET", "segments");
  show(h("h1", {}, "Segments"), segments.length
    ? table(["Id", "Name", "Devices", "Audience", "Created"], segments.map((s) =>
      [h("code", {}, s.segment_id), s.name, String(s.size), fmtJson(s.audience), time(s.created_ms)]))
    : h("p", { class: "muted" }, "No segments."));
}

async function abtests() {
  const { abtests } = await api("GET", "abtests");
  show(h("h1", {}, "A/B tests"), ...(abtests.length ? abtests.map((t) => h("section", { class: "card abtest", "data-abtest": t.abtest_id },
    h("h2", {}, `${t.name} `, h("code", {}, t.abtest_id)),
    h("p", { class: "leader" }, t.leader ? `Leader: ${t.leader}` : "No leader yet (nothing delivered).",
      t.p_value !== null && t.p_value !== undefined ? ` · p-value ${t.p_value.toFixed(4)}` : "",
      ` · control: ${t.control_targeted} devices left out`),
    h("div", { class: "grid" }, t.variants.map((v) => h("div", {},
      h("h3", {}, `${v.name}${t.leader === v.name ? " ★ leader" : ""}`),
      funnel(v.funnel, `Variant ${v.name}`),
      h("p", { class: "muted" }, `click rate ${(100 * v.click_rate).toFixed(1)}%`)))))) : [h("p", { class: "muted" }, "No A/B tests.")]));
}

async function geofences() {
  const { geofences } = await api("GET", "geofences");
  show(h("h1", {}, "Geofences"), geofences.length ? h("div", { class: "card" }, geofencePlot(geofences)) : null,
    geofences.length ? table(["Id", "Name", "Lat", "Lon", "Radius (m)", "Fires on"], geofences.map((f) =>
      [h("code", {}, f.geofence_id), f.name, String(f.lat), String(f.lon), String(f.radius_m),
        f.events.join(", ") + (f.stay_s ? ` (stay ${f.stay_s} s)` : "")]))
      : h("p", { class: "muted" }, "No geofences."));
}

export const views = { pushes, push, send, devices, callbacks, schedules, vendors, segments, abtests, geofences };
