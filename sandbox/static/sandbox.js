// Whistle sandbox page: pick a person, chat with the bot through the fake Telegram.
// Plain JavaScript, no build step. Talks to /sandbox/api/... and listens to its SSE stream.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const people = window.SANDBOX_PEOPLE || [];
  const peopleById = new Map(people.map((p) => [p.id, p]));
  const state = {
    person: null, chats: [], chat: null, replyTo: null, events: null,
    unread: new Map(), typingTimer: null, mapPoint: null,
  };

  // ---------------------------------------------------------------- API

  async function api(path, options = {}) {
    const init = { method: options.method || "GET", headers: {} };
    if (options.form) {
      init.body = options.form;
    } else if (options.json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.json);
    }
    const response = await fetch("/sandbox/api" + path, init);
    let body = null;
    try { body = await response.json(); } catch (_) { /* not JSON */ }
    if (!response.ok) {
      throw new Error((body && body.error) || `HTTP ${response.status}`);
    }
    return body;
  }

  const chatPath = (suffix) => `/people/${state.person.id}/chats/${state.chat}/${suffix}`;

  async function act(suffix, options) {
    if (!state.person || state.chat === null) return null;
    try {
      return await api(chatPath(suffix), { method: "POST", ...options });
    } catch (error) {
      toast(`出错了 Error: ${error.message}`, "error");
      return null;
    }
  }

  // ---------------------------------------------------------------- toast

  let toastTimer = null;
  function toast(text, kind = "") {
    const box = $("toast");
    box.textContent = text;
    box.className = "toast " + kind;
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, kind === "alert" ? 6000 : 3000);
  }
  $("toast").addEventListener("click", () => { $("toast").hidden = true; });

  // ---------------------------------------------------------------- people and chats

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    return { person: Number(params.get("person")) || null, chat: params.has("chat") ? Number(params.get("chat")) : null };
  }

  function writeHash() {
    const params = new URLSearchParams();
    if (state.person) params.set("person", state.person.id);
    if (state.chat !== null) params.set("chat", state.chat);
    history.replaceState(null, "", "#" + params.toString());
  }

  async function selectPerson(id, wantedChat = null) {
    const person = peopleById.get(id);
    if (!person) return;
    state.person = person;
    $("toast").hidden = true;  // it answered the previous person
    $("who").value = String(id);
    const units = person.units.map((u) => `${u.name} ${u.name_en}`).join("、");
    $("who-info").textContent = `${person.role_label}` + (units ? ` · ${units}` : "") +
      ` · Telegram id ${person.id} · ${person.language}`;
    state.unread.clear();
    state.chats = person.chats;  // rendered into the page, so the first paint shows them
    connectEvents();
    const chat = state.chats.find((c) => c.id === wantedChat) || state.chats[0];
    await openChat(chat.id, wantedChat !== null);
  }

  function renderChats() {
    const list = $("chats");
    list.replaceChildren();
    for (const chat of state.chats) {
      const button = el("button", { type: "button", class: chat.id === state.chat ? "active" : "" });
      const initial = chat.type === "group" ? "群" : "W";
      button.append(
        el("span", { class: "avatar " + chat.type }, initial),
        el("span", { class: "chat-text" }, el("div", { class: "t" }, chat.title), el("div", { class: "s" }, chat.subtitle)),
      );
      const count = state.unread.get(chat.id) || 0;
      if (count) button.append(el("span", { class: "unread" }, String(count)));
      button.addEventListener("click", () => openChat(chat.id, true));
      list.append(el("li", {}, button));
    }
  }

  async function openChat(chatId, focus = false) {
    state.chat = chatId;
    state.unread.delete(chatId);
    setReply(null);
    writeHash();
    renderChats();
    const chat = state.chats.find((c) => c.id === chatId);
    $("chat-title").textContent = chat ? chat.title : "";
    $("chat-sub").textContent = chat ? chat.subtitle : "";
    $("composer").classList.remove("disabled");
    if (focus) document.body.classList.add("in-chat");
    await reloadMessages();
    if (focus && window.matchMedia("(min-width: 761px)").matches) $("text").focus();
  }

  async function reloadMessages() {
    if (!state.person || state.chat === null) return;
    const wanted = state.chat;
    const data = await api(chatPath("messages"));
    if (state.chat !== wanted) return;
    const box = $("messages");
    box.replaceChildren();
    for (const message of data.messages) box.append(renderMessage(message));
    if (!data.messages.length) box.append(emptyHint());
    renderKeyboard(data.keyboard);
    scrollDown();
  }

  function emptyHint() {
    const chat = state.chats.find((c) => c.id === state.chat);
    const hint = el("div", { class: "empty" });
    if (chat && chat.type === "private") {
      const start = el("button", { type: "button", class: "send" }, "/start");
      start.addEventListener("click", () => sendText("/start"));
      hint.append(
        el("div", {}, "还没有消息。发送 /start 开始。"),
        el("div", { class: "en" }, "No messages yet. Send /start to begin."),
        start,
      );
    } else {
      hint.append(
        el("div", {}, "群里还没有消息。居民报告的问题会出现在这里。"),
        el("div", { class: "en" }, "No messages in this group yet. Reports from residents appear here."),
      );
    }
    return hint;
  }

  // ---------------------------------------------------------------- rendering messages

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === "") continue;
      node.setAttribute(key, value);
    }
    node.append(...children);
    return node;
  }

  const ENTITY_TAGS = {
    bold: "b", italic: "i", underline: "u", strikethrough: "s", code: "code", pre: "pre",
    blockquote: "blockquote", expandable_blockquote: "blockquote",
  };

  function safeUrl(url) {
    return /^https?:\/\//i.test(url || "") ? url : null;
  }

  function entityNode(entity, text) {
    if (entity.type === "text_link" || entity.type === "url") {
      const href = safeUrl(entity.type === "url" ? text : entity.url);
      if (href) return el("a", { href, target: "_blank", rel: "noopener noreferrer" });
    }
    if (entity.type === "spoiler") {
      const span = el("span", { class: "spoiler", title: "点击显示 Click to reveal" });
      span.addEventListener("click", () => span.classList.add("shown"));
      return span;
    }
    return document.createElement(ENTITY_TAGS[entity.type] || "span");
  }

  // Telegram entities count UTF-16 code units, like JavaScript strings.
  function formatted(text, entities) {
    const root = el("div", { class: "body" });
    const sorted = (entities || []).slice().sort((a, b) => a.offset - b.offset || b.length - a.length);
    (function build(parent, start, end, list) {
      let pos = start;
      let i = 0;
      while (i < list.length) {
        const entity = list[i];
        if (entity.offset < pos || entity.offset >= end) { i += 1; continue; }
        const stop = Math.min(entity.offset + entity.length, end);
        const inner = [];
        let j = i + 1;
        while (j < list.length && list[j].offset < stop) { inner.push(list[j]); j += 1; }
        parent.append(text.slice(pos, entity.offset));
        const node = entityNode(entity, text.slice(entity.offset, stop));
        build(node, entity.offset, stop, inner);
        parent.append(node);
        pos = stop;
        i = j;
      }
      parent.append(text.slice(pos, end));
    })(root, 0, text.length, sorted);
    return root;
  }

  function time(seconds) {
    if (!seconds) return "";
    const d = new Date(seconds * 1000);
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
  }

  function renderMessage(m) {
    if (m.service) {
      return el("div", { class: "msg service", "data-id": m.id }, `${m.from.name} ${m.service}`);
    }
    const mine = state.person && m.from.id === state.person.id;
    const chat = state.chats.find((c) => c.id === m.chat_id);
    const kind = mine ? "mine" : m.from.is_bot ? "bot" : "other";
    const node = el("div", { class: "msg " + kind, "data-id": m.id });
    if (!mine && (m.from.is_bot || (chat && chat.type === "group"))) {
      node.append(el("div", { class: "from" + (m.from.is_bot ? " bot" : "") }, m.from.name));
    }
    if (m.reply_to) {
      const quote = el("div", { class: "quote" }, el("b", {}, m.reply_to.name || ""), m.reply_to.text || "");
      quote.addEventListener("click", () => {
        const target = $("messages").querySelector(`[data-id="${m.reply_to.id}"]`);
        if (target) { target.scrollIntoView({ block: "center" }); flash(target); }
      });
      node.append(quote);
    }
    if (m.photo_url) {
      node.append(el("img", { class: "photo", src: m.photo_url, alt: "照片 Photo", loading: "lazy" }));
    } else if (m.photo_url === null) {
      node.append(el("span", { class: "chip" }, "🖼 照片 Photo"));
    }
    if (m.location) {
      node.append(el("span", { class: "chip" },
        `📍 ${m.location.latitude.toFixed(5)}, ${m.location.longitude.toFixed(5)}`));
    }
    if (m.contact) {
      node.append(el("span", { class: "chip" }, `📱 ${m.contact.first_name || ""} ${m.contact.phone_number}`));
    }
    if (m.document) {
      const href = m.document.url;
      node.append(href ? el("a", { class: "chip", href, target: "_blank" }, `📎 ${m.document.file_name || "file"}`)
        : el("span", { class: "chip" }, `📎 ${m.document.file_name || "file"}`));
    }
    if (m.other) node.append(el("span", { class: "chip" }, m.other));
    if (m.text !== undefined) node.append(formatted(m.text, m.entities));
    if (m.caption !== undefined) node.append(formatted(m.caption, m.caption_entities));
    if (m.buttons) node.append(inlineKeyboard(m));
    const meta = el("div", { class: "meta" });
    if (m.edited) meta.append(el("span", {}, "已编辑 edited"));
    meta.append(el("span", {}, time(m.date)));
    if (!mine && chat && chat.type === "group") {  // answering a ForceReply prompt in a group
      const reply = el("button", { type: "button", class: "reply-btn", title: "回复这条消息 Reply to this message" }, "↩ 回复 Reply");
      reply.addEventListener("click", () => setReply(m));
      meta.append(reply);
    }
    node.append(meta);
    return node;
  }

  function inlineKeyboard(m) {
    const box = el("div", { class: "inline-kb" });
    for (const row of m.buttons) {
      const line = el("div", { class: "row" });
      for (const b of row) {
        if (b.data) {
          const button = el("button", { type: "button", "data-callback": b.data }, b.text);
          button.addEventListener("click", () => press(m, b, button));
          line.append(button);
        } else if (safeUrl(b.url)) {
          line.append(el("a", { href: b.url, target: "_blank", rel: "noopener noreferrer" }, b.text + " ↗"));
        } else {
          line.append(el("button", { type: "button", disabled: "disabled" }, b.text));
        }
      }
      box.append(line);
    }
    return box;
  }

  async function press(m, b, button) {
    button.disabled = true;
    const result = await act("press", { json: { message_id: m.id, data: b.data } });
    setTimeout(() => { button.disabled = false; }, result ? 600 : 0);
  }

  function flash(node) {
    node.classList.remove("flash");
    void node.offsetWidth;
    node.classList.add("flash");
  }

  function nearBottom() {
    const box = $("messages");
    return box.scrollHeight - box.scrollTop - box.clientHeight < 120;
  }

  function scrollDown() {
    const box = $("messages");
    box.scrollTop = box.scrollHeight;
    // Images load later and grow the message; keep the bottom in view once they have.
    for (const img of box.querySelectorAll("img.photo:not([data-watched])")) {
      img.dataset.watched = "1";
      if (!img.complete) img.addEventListener("load", () => { box.scrollTop = box.scrollHeight; }, { once: true });
    }
  }

  function renderKeyboard(rows) {
    const box = $("keyboard");
    box.replaceChildren();
    box.hidden = !rows || !rows.length;
    for (const row of rows || []) {
      const line = el("div", { class: "row" });
      for (const b of row) {
        const button = el("button", { type: "button" }, b.text);
        button.addEventListener("click", () => keyboardButton(b));
        line.append(button);
      }
      box.append(line);
    }
  }

  function keyboardButton(b) {
    if (b.request === "location") openMap();
    else if (b.request === "contact") act("contact", { json: {} });
    else sendText(b.text);
  }

  function setReply(m) {
    state.replyTo = m ? m.id : null;
    $("reply-bar").hidden = !m;
    if (m) {
      $("reply-text").textContent = `${m.from.name}: ${(m.text || m.caption || "…").slice(0, 80)}`;
      $("text").focus();
    }
  }

  // ---------------------------------------------------------------- sending

  async function sendText(text) {
    if (!text.trim()) return false;
    const json = { text };
    if (state.replyTo !== null) json.reply_to = state.replyTo;
    const result = await act("text", { json });
    if (result) setReply(null);
    return Boolean(result);
  }

  $("composer").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("text");
    const text = input.value;
    if (await sendText(text)) { input.value = ""; autoGrow(); }
  });

  function autoGrow() {
    const input = $("text");
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight + 2, 128) + "px";
    input.style.overflowY = input.scrollHeight > 128 ? "auto" : "hidden";
  }
  $("text").addEventListener("input", autoGrow);
  $("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });

  $("photo").addEventListener("change", async () => {
    const file = $("photo").files[0];
    $("photo").value = "";
    if (!file) return;
    const form = new FormData();
    form.append("photo", file);
    const caption = $("text").value.trim();
    if (caption) form.append("caption", caption);
    if (state.replyTo !== null) form.append("reply_to", String(state.replyTo));
    const result = await act("photo", { form });
    if (result) { $("text").value = ""; autoGrow(); setReply(null); }
  });

  $("reply-cancel").addEventListener("click", () => setReply(null));
  $("back").addEventListener("click", () => document.body.classList.remove("in-chat"));
  $("who").addEventListener("change", () => selectPerson(Number($("who").value)));
  window.addEventListener("hashchange", () => {  // a link to #person=…&chat=…
    const wanted = readHash();
    if (!peopleById.has(wanted.person)) return;
    const open = wanted.chat !== null ? wanted.chat : null;
    if (state.person && wanted.person === state.person.id) {
      if (open !== null && state.chats.some((c) => c.id === open)) openChat(open, true);
    } else {
      selectPerson(wanted.person, open).catch((error) => toast(`出错了 Error: ${error.message}`, "error"));
      if (open !== null) document.body.classList.add("in-chat");
    }
  });

  // ---------------------------------------------------------------- map picker

  const map = $("map");
  const dialog = $("map-dialog");

  function openMap() {
    if (!map) { toast("没有地图 No map: the org file has no grid boundaries", "error"); return; }
    state.mapPoint = null;
    $("map-send").disabled = true;
    $("map-coords").textContent = "点击地图选择位置 · Click the map to choose a point";
    $("map-pin").setAttribute("cx", -100);
    dialog.showModal();
  }
  $("loc-btn").addEventListener("click", openMap);

  if (map) {
    const originLon = Number(map.dataset.originLon);
    const originLat = Number(map.dataset.originLat);
    const kx = Number(map.dataset.kx);
    const scale = Number(map.dataset.scale);
    map.addEventListener("click", (event) => {
      const point = map.createSVGPoint();
      point.x = event.clientX;
      point.y = event.clientY;
      const p = point.matrixTransform(map.getScreenCTM().inverse());
      const lon = originLon + p.x / (kx * scale);
      const lat = originLat - p.y / scale;
      state.mapPoint = { latitude: Number(lat.toFixed(6)), longitude: Number(lon.toFixed(6)) };
      $("map-pin").setAttribute("cx", p.x);
      $("map-pin").setAttribute("cy", p.y);
      const target = event.target.closest && event.target.closest(".grid");
      const where = target ? target.querySelector("title").textContent : "不在任何网格内 outside every grid";
      $("map-coords").textContent = `📍 ${state.mapPoint.latitude.toFixed(5)}, ${state.mapPoint.longitude.toFixed(5)} · ${where}`;
      $("map-send").disabled = false;
    });
    $("map-send").addEventListener("click", async () => {
      if (!state.mapPoint) return;
      dialog.close();
      await act("location", { json: state.mapPoint });
    });
  } else {
    $("loc-btn").hidden = true;
  }

  // ---------------------------------------------------------------- live events

  function connectEvents() {
    if (state.events) state.events.close();
    const source = new EventSource(`/sandbox/api/people/${state.person.id}/events`);
    let wasDown = false;
    source.onopen = () => {
      $("live").classList.add("on");
      if (wasDown) reloadMessages();  // catch up with what happened while disconnected
      wasDown = false;
    };
    source.onerror = () => { $("live").classList.remove("on"); wasDown = true; };
    source.onmessage = (event) => {
      try { handleEvent(JSON.parse(event.data)); } catch (error) { console.error(error); }
    };
    state.events = source;
  }

  function handleEvent(ev) {
    if (ev.type === "callback_answer") {
      if (ev.text) toast(ev.text, ev.show_alert ? "alert" : "");
      return;
    }
    const here = ev.chat_id === state.chat;
    if (ev.type === "message") {
      if (!here) {
        state.unread.set(ev.chat_id, (state.unread.get(ev.chat_id) || 0) + 1);
        renderChats();
        return;
      }
      const box = $("messages");
      const stick = nearBottom();
      const empty = box.querySelector(".empty");
      if (empty) empty.remove();
      const existing = box.querySelector(`[data-id="${ev.message.id}"]`);
      const node = renderMessage(ev.message);
      if (existing) existing.replaceWith(node); else box.append(node);
      if (ev.message.force_reply && ev.message.from.is_bot) setReply(ev.message);
      if (stick || ev.message.from.id === state.person.id) scrollDown();
      setTyping(false);
    } else if (ev.type === "edit" && here) {
      const stick = nearBottom();
      const existing = $("messages").querySelector(`[data-id="${ev.message.id}"]`);
      if (existing) { const node = renderMessage(ev.message); existing.replaceWith(node); flash(node); }
      if (stick) scrollDown();
    } else if (ev.type === "delete" && here) {
      const existing = $("messages").querySelector(`[data-id="${ev.message_id}"]`);
      if (existing) existing.remove();
    } else if (ev.type === "keyboard" && here) {
      const stick = nearBottom();
      renderKeyboard(ev.keyboard);
      if (stick) scrollDown();
    } else if (ev.type === "chat_action" && here) {
      setTyping(true);
    }
  }

  function setTyping(on) {
    $("typing").hidden = !on;
    clearTimeout(state.typingTimer);
    if (on) state.typingTimer = setTimeout(() => { $("typing").hidden = true; }, 4000);
  }

  // ---------------------------------------------------------------- start

  $("composer").classList.add("disabled");
  const wanted = readHash();
  const first = peopleById.has(wanted.person) ? wanted.person : (people[0] && people[0].id);
  if (first) {
    selectPerson(first, wanted.chat).catch((error) => toast(`出错了 Error: ${error.message}`, "error"));
    if (wanted.chat !== null && peopleById.has(wanted.person)) document.body.classList.add("in-chat");
  }
})();
