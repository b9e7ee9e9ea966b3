// The byoc-gateway sandbox page. Plain JavaScript, no build step, no other origin.
//
// Customer text is hostile by design: every piece of data reaches the DOM through
// textContent / text nodes (the `el` helper below), never through HTML parsing.
"use strict";

(() => {
  // -- tiny DOM helpers -------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  // el("p", {class: "x", title: "y"}, "text", child) - strings become text nodes.
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function timeOf(value) {
    const date = typeof value === "number" ? new Date(value) : new Date(String(value));
    return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString();
  }

  function initials(name) {
    const words = String(name || "?").trim().split(/\s+/);
    return words.slice(0, 2).map((w) => w.charAt(0).toUpperCase()).join("") || "?";
  }

  function setStatus(node, text, isError) {
    node.textContent = text || "";
    node.classList.toggle("error", Boolean(isError));
  }

  // -- talking to the page's JSON API -----------------------------------------------

  async function getJSON(path) {
    const response = await fetch(path, { headers: { Accept: "application/json" } });
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new Error((body && body.message) || `HTTP ${response.status}`);
    return body;
  }

  async function postJSON(path, payload) {
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(payload),
    });
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new Error((body && body.message) || `HTTP ${response.status}`);
    return body;
  }

  // The CXone simulator answers 200 with the gateway's own answer inside.
  function gatewayProblem(result) {
    if (!result || typeof result.status !== "number") return "no answer";
    if (result.status >= 200 && result.status < 300) return null;
    const body = result.body;
    const why = body && typeof body === "object" ? body.message || body.error : null;
    if (result.status === 0) return "the gateway did not answer";
    return `the gateway answered ${result.status}${why ? ": " + String(why) : ""}`;
  }

  function remembered(key) {
    try {
      return window.localStorage.getItem(key);
    } catch (_) {
      return null; // storage switched off: start with the default
    }
  }

  function remember(key, value) {
    try {
      window.localStorage.setItem(key, value);
    } catch (_) {
      /* storage switched off: the choice lasts until reload */
    }
  }

  // -- state ------------------------------------------------------------------------

  const ui = {
    info: { channels: { chat: "", board: "" } },
    wh: null, // the Watering Hole simulator's state
    cx: null, // the CXone simulator's state
    seq: { wh: -1, cx: -1 },
    animal: remembered("byoc-sandbox-animal") || "usr_zebra",
    whTab: "chat",
    cxTab: "chat",
    selected: { chat: null, board: null }, // thread key per channel role
    seen: new Map(), // thread key -> last entry seq the agent looked at
    replyTo: null, // {id, label} for board replies
    commentTarget: new Map(), // post id -> {id, label}
    typingOn: null, // {channel_id, thread_id} while the agent's typing indicator is on
    postCards: new Map(),
    threadItems: new Map(),
  };

  const accountId = () => (ui.wh && ui.wh.account && ui.wh.account.user.id) || "usr_jungle";

  function users() {
    const map = new Map();
    for (const user of (ui.wh && ui.wh.users) || []) map.set(user.id, user);
    return map;
  }

  function nameOf(userId) {
    const user = users().get(userId);
    return user ? user.display_name : String(userId);
  }

  const threadKey = (t) => `${t.channel_id}\u0000${t.thread_id}`;

  function roleOf(channelId) {
    for (const [role, id] of Object.entries(ui.info.channels || {})) if (id === channelId) return role;
    return null;
  }

  // -- refreshing: one long poll at a time, backing off on errors -------------------

  let refreshing = null;
  let refreshAgain = false;

  function refresh() {
    if (refreshing) {
      refreshAgain = true;
      return refreshing;
    }
    refreshing = (async () => {
      do {
        refreshAgain = false;
        const state = await getJSON("/api/state");
        ui.wh = state.watering_hole;
        ui.cx = state.cxone;
        ui.seq = { wh: ui.wh.seq, cx: ui.cx.seq };
        render();
      } while (refreshAgain);
    })().finally(() => {
      refreshing = null;
    });
    return refreshing;
  }

  function connection(text, ok) {
    const node = $("conn");
    node.textContent = text;
    node.classList.toggle("bad", !ok);
  }

  async function pollForever() {
    let backoff = 500;
    for (;;) {
      const started = Date.now();
      try {
        const changes = await getJSON(`/api/changes?wh=${ui.seq.wh}&cx=${ui.seq.cx}`);
        connection("live", true);
        backoff = 500;
        if (changes.changed) await refresh();
        else if (Date.now() - started < 1000) await sleep(1000); // never spin
      } catch (error) {
        connection(`reconnecting (${error.message})`, false);
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 15000);
        try {
          await refresh();
        } catch (_) {
          /* the next round tells */
        }
      }
    }
  }

  // -- rendering --------------------------------------------------------------------

  function render() {
    renderAnimals();
    renderChat();
    renderBoard();
    renderDesk();
  }

  function renderAnimals() {
    const select = $("animal");
    const animals = ((ui.wh && ui.wh.users) || []).filter((u) => u.id !== accountId());
    if (!animals.some((u) => u.id === ui.animal) && animals.length) ui.animal = animals[0].id;
    const wanted = animals.map((u) => `${u.id}\u0000${u.display_name}`).join("\u0001");
    if (select.dataset.options !== wanted) {
      select.replaceChildren(...animals.map((u) => el("option", { value: u.id }, u.display_name)));
      select.dataset.options = wanted;
      const to = $("proactive-to");
      const current = to.value;
      to.replaceChildren(...animals.map((u) => el("option", { value: u.id }, u.display_name)));
      if (current) to.value = current;
    }
    select.value = ui.animal;
  }

  function keepScroll(node, draw) {
    const atBottom = node.scrollHeight - node.scrollTop - node.clientHeight < 40;
    draw();
    if (atBottom) node.scrollTop = node.scrollHeight;
  }

  // Left: the animal's direct messages with The Jungle.
  function renderChat() {
    const log = $("chat-log");
    const me = ui.animal;
    const conversations = ((ui.wh && ui.wh.conversations) || []).filter((c) => c.participants[0] === me);
    $("chat-title").textContent = `${nameOf(me)} and The Jungle`;
    keepScroll(log, () => {
      const nodes = [];
      for (const conv of conversations) {
        nodes.push(el("p", { class: "divider" }, `conversation ${conv.id} \u00b7 ${timeOf(conv.created_at_ms)}`));
        for (const msg of conv.messages) nodes.push(chatBubble(msg, me));
        if (conv.closed) {
          const by = conv.closed_by === "account" ? "The Jungle" : nameOf(me);
          nodes.push(el("p", { class: "divider" }, `closed by ${by}`));
        }
      }
      if (!nodes.length) nodes.push(el("p", { class: "empty" }, "No messages yet. Say hello to The Jungle."));
      log.replaceChildren(...nodes);
    });
    const open = conversations.filter((c) => !c.closed);
    $("chat-typing").hidden = !open.some((c) => c.typing && c.typing.on);
    $("dm-close").hidden = !open.length;
  }

  function chatBubble(msg, me) {
    const mine = msg.author_id === me;
    const brand = msg.author_id === accountId();
    const meta = [el("span", { class: "author" }, brand ? "The Jungle" : nameOf(msg.author_id)), " \u00b7 ", timeOf(msg.created_at_ms)];
    const parts = [el("p", { class: "meta" }, meta), el("p", { class: "text" }, msg.text)];
    for (const file of msg.attachments || []) parts.push(el("p", { class: "file" }, `\u{1F4CE} ${file.name}`));
    if (brand) parts.push(receiptBar(msg));
    return el("div", { class: `bubble ${mine ? "mine" : "theirs"}` }, parts);
  }

  function receiptBar(msg) {
    const label = msg.status === "failed" ? `failed: ${msg.failure_reason || "undeliverable"}` : msg.status;
    const bar = el("p", { class: "receipts" }, el("span", { class: `status s-${msg.status}` }, label));
    const act = (kind, text) =>
      el("button", {
        type: "button",
        class: "link",
        onclick: () => postJSON("/api/wh/receipt", { message_id: msg.id, kind }).then(refresh, (e) => setStatus($("dm-status"), e.message, true)),
      }, text);
    if (msg.status === "sent") bar.append(" ", act("delivered", "mark delivered"));
    if (msg.status === "sent" || msg.status === "delivered") bar.append(" ", act("read", "mark read"));
    if (msg.status === "sent") bar.append(" ", act("failed", "fail it"));
    return bar;
  }

  // Left: the public board, newest post first.
  function renderBoard() {
    const box = $("posts");
    const posts = (ui.wh && ui.wh.posts) || [];
    $("posts-empty").hidden = posts.length > 0;
    for (const post of posts) {
      let card = ui.postCards.get(post.id);
      if (!card) {
        card = postCard(post);
        ui.postCards.set(post.id, card);
        box.prepend(card.root);
      }
      card.head.replaceChildren(
        el("h3", {}, post.title),
        el("p", { class: "meta" }, el("span", { class: "author" }, nameOf(post.author_id)), " \u00b7 ", timeOf(post.created_at_ms)),
        el("p", { class: "text" }, post.body),
      );
      card.comments.replaceChildren(commentTree(post.id, post.comments));
      const target = ui.commentTarget.get(post.id);
      card.label.textContent = target ? `Reply to ${target.label} as ${nameOf(ui.animal)}` : `Comment as ${nameOf(ui.animal)}`;
      card.cancel.hidden = !target;
    }
  }

  function postCard(post) {
    const head = el("div");
    const comments = el("div", { class: "comments" });
    const id = `comment-${post.id}`;
    const label = el("label", { for: id });
    const text = el("textarea", { id, rows: 2, maxlength: 1000 });
    const status = el("p", { class: "form-status", role: "status", "aria-live": "polite" });
    const cancel = el("button", { type: "button", class: "link", onclick: () => { ui.commentTarget.delete(post.id); render(); } }, "comment on the post instead");
    const form = el("form", { class: "compose", novalidate: true }, label, el("div", { class: "row" }, text, el("button", { type: "submit" }, "Comment")), el("div", { class: "row foot" }, cancel, status));
    submitOnEnter(text, form);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = text.value.trim();
      if (!body) return setStatus(status, "write something first", true);
      const target = ui.commentTarget.get(post.id);
      const payload = { user_id: ui.animal, post_id: post.id, body };
      if (target) payload.parent_comment_id = target.id;
      try {
        await postJSON("/api/wh/comment", payload);
        text.value = "";
        ui.commentTarget.delete(post.id);
        setStatus(status, "");
        await refresh();
      } catch (error) {
        setStatus(status, error.message, true);
      }
    });
    const root = el("article", { class: "card post" }, head, comments, form);
    return { root, head, comments, label, text, cancel };
  }

  function commentTree(postId, comments) {
    const list = el("ul", { class: "tree" });
    for (const comment of comments || []) {
      const who = comment.author_id === accountId() ? "The Jungle" : nameOf(comment.author_id);
      const reply = el("button", {
        type: "button",
        class: "link",
        onclick: () => {
          ui.commentTarget.set(postId, { id: comment.id, label: who });
          render();
          const card = ui.postCards.get(postId);
          if (card) card.text.focus();
        },
      }, "reply");
      const body = el("div", { class: `comment${comment.author_id === accountId() ? " brand" : ""}` },
        el("p", { class: "meta" }, el("span", { class: "author" }, who), " \u00b7 ", timeOf(comment.created_at_ms), " ", reply),
        el("p", { class: "text" }, comment.body));
      list.append(el("li", {}, body, comment.replies && comment.replies.length ? commentTree(postId, comment.replies) : null));
    }
    return list;
  }

  // Right: the agent desktop.
  function threadsOf(role) {
    const id = ui.info.channels[role];
    return ((ui.cx && ui.cx.threads) || []).filter((t) => t.channel_id === id);
  }

  function endUserName(thread) {
    const u = thread.end_user || {};
    return u.firstName || u.name || u.nickname || u.idOnExternalPlatform || "someone";
  }

  function lastSeq(thread) {
    const msgs = thread.messages || [];
    return msgs.length ? msgs[msgs.length - 1].seq : 0;
  }

  function threadTitle(thread) {
    const first = (thread.messages || [])[0];
    if (roleOf(thread.channel_id) === "board" && first && first.body && first.body.title) return String(first.body.title);
    return endUserName(thread);
  }

  function renderDesk() {
    const role = ui.cxTab;
    const threads = threadsOf(role);
    const keys = new Set(threads.map(threadKey));
    if (!keys.has(ui.selected[role])) {
      // nothing chosen yet: the most recently active thread
      const latest = [...threads].sort((a, b) => lastSeq(b) - lastSeq(a))[0];
      ui.selected[role] = latest ? threadKey(latest) : null;
    }
    const thread = threads.find((t) => threadKey(t) === ui.selected[role]) || null;
    if (thread) ui.seen.set(threadKey(thread), lastSeq(thread));
    for (const r of ["chat", "board"]) {
      const all = threadsOf(r);
      const unread = all.some((t) => lastSeq(t) > (ui.seen.get(threadKey(t)) || 0));
      $(`cx-count-${r}`).textContent = all.length ? `${all.length}${unread ? " \u2022" : ""}` : "";
    }
    renderThreadList(role, threads);
    $("proactive").hidden = role !== "chat";
    renderConversation(role, thread);
  }

  function renderThreadList(role, threads) {
    const list = $("thread-list");
    const wanted = new Set(threads.map(threadKey));
    for (const [key, item] of ui.threadItems) {
      if (!wanted.has(key)) {
        item.root.remove();
        ui.threadItems.delete(key);
      }
    }
    for (const thread of threads) {
      const key = threadKey(thread);
      let item = ui.threadItems.get(key);
      if (!item) {
        const button = el("button", { type: "button", onclick: () => selectThread(role, key) });
        item = { root: el("li", {}, button), button };
        ui.threadItems.set(key, item);
        list.append(item.root);
      }
      const msgs = thread.messages || [];
      const last = msgs[msgs.length - 1];
      const selected = key === ui.selected[role];
      const unread = lastSeq(thread) > (ui.seen.get(key) || 0);
      item.button.classList.toggle("selected", selected);
      item.button.classList.toggle("unread", unread);
      item.button.setAttribute("aria-current", selected ? "true" : "false");
      item.button.replaceChildren(
        el("span", { class: "avatar", "aria-hidden": "true" }, initials(endUserName(thread))),
        el("span", { class: "thread-text" },
          el("span", { class: "thread-name" }, threadTitle(thread), unread ? el("span", { class: "dot", "aria-label": "new" }) : null),
          el("span", { class: "thread-last" }, last ? `${last.kind === "agent" ? "You: " : ""}${last.text || "(no text)"}` : ""),
          el("span", { class: "thread-meta" }, `contact ${thread.contact_id || "-"} \u00b7 ${thread.contact_status || "-"}`)),
      );
    }
    // only this channel's threads are shown: the items of the other tab were removed above
    $("threads-empty").hidden = threads.length > 0;
  }

  function selectThread(role, key) {
    if (ui.selected[role] !== key) {
      ui.selected[role] = key;
      ui.replyTo = null;
      setStatus($("reply-status"), "");
    }
    renderDesk();
  }

  function renderConversation(role, thread) {
    const head = $("conv-head");
    const log = $("cx-log");
    const form = $("reply-form");
    if (!thread) {
      head.replaceChildren(el("p", { class: "empty" }, role === "chat" ? "When an animal writes, its conversation shows here." : "When an animal posts on the board, the post and its comments show here."));
      log.replaceChildren();
      form.hidden = true;
      return;
    }
    form.hidden = false;
    head.replaceChildren(
      el("h3", {}, threadTitle(thread)),
      el("p", { class: "meta" },
        `${endUserName(thread)} \u00b7 thread ${thread.thread_id}`,
        thread.platform_thread_id ? ` (on the platform: ${thread.platform_thread_id})` : "",
        ` \u00b7 contact ${thread.contact_id || "-"} (${thread.contact_status || "-"})`,
        thread.agent_typing ? " \u00b7 you are typing" : ""),
    );
    keepScroll(log, () => {
      const msgs = (thread.messages || []).map((m) => deskBubble(role, thread, m));
      log.replaceChildren(...(msgs.length ? msgs : [el("p", { class: "empty" }, "No messages.")]));
    });
    const board = role === "board";
    const rt = $("reply-to");
    rt.hidden = !board;
    if (board) {
      $("reply-to-text").textContent = ui.replyTo ? `Replying to ${ui.replyTo.label}` : "Replying to the post";
      $("reply-to-clear").hidden = !ui.replyTo;
    }
    $("reply-label").textContent = board ? "Your comment (posted as The Jungle)" : `Reply to ${endUserName(thread)}`;
  }

  function deskBubble(role, thread, entry) {
    const agent = entry.kind === "agent";
    const body = entry.body && typeof entry.body === "object" ? entry.body : {};
    const author = agent
      ? ui.info.agent || "Agent"
      : entry.kind === "outbound"
        ? "The Jungle (sent on the platform)"
        : (body.authorEndUserIdentity && (body.authorEndUserIdentity.firstName || body.authorEndUserIdentity.nickname || body.authorEndUserIdentity.idOnExternalPlatform)) || endUserName(thread);
    const parts = [el("p", { class: "meta" }, el("span", { class: "author" }, author), " \u00b7 ", timeOf(entry.at))];
    if (body.title && !agent) parts.push(el("p", { class: "title" }, String(body.title)));
    const replyTo = body.replyToMessage && body.replyToMessage.idOnExternalPlatform;
    if (replyTo && replyTo !== thread.thread_id) parts.push(el("p", { class: "small" }, `in reply to ${replyTo}`));
    parts.push(el("p", { class: "text" }, entry.text === null || entry.text === undefined ? "(no text)" : entry.text));
    for (const file of body.attachments || []) parts.push(el("p", { class: "file" }, `\u{1F4CE} ${file.friendlyName || file.url || "file"}`));
    const facts = el("p", { class: "small ids" });
    if (agent) {
      if (entry.ok) facts.append(`platform id ${entry.message_id}`);
      else facts.append(el("span", { class: "status s-failed" }, gatewayProblem({ status: entry.http_status || 0, body: entry.answer }) || "not sent"));
      const statuses = entry.statuses || [];
      if (statuses.length) {
        const last = statuses[statuses.length - 1];
        facts.append(" \u00b7 ", el("span", { class: `status s-${last.status}` }, last.reason ? `${last.status}: ${last.reason}` : last.status));
      } else if (entry.ok) facts.append(" \u00b7 ", el("span", { class: "status s-sent" }, "sent"));
    } else {
      facts.append(`id ${entry.message_id || "-"}`);
      if (entry.duplicate) facts.append(" \u00b7 duplicate");
    }
    parts.push(facts);
    if (role === "board" && !agent && entry.message_id && entry.message_id !== thread.thread_id) {
      const label = `${author}: \u201c${String(entry.text || "").slice(0, 40)}\u201d`;
      parts.push(el("button", {
        type: "button",
        class: "link",
        onclick: () => {
          ui.replyTo = { id: entry.message_id, label };
          renderDesk();
          $("reply-text").focus();
        },
      }, "reply to this comment"));
    }
    return el("div", { class: `bubble ${agent ? "mine" : "theirs"}${entry.ok === false ? " broken" : ""}` }, parts);
  }

  // -- forms and controls -----------------------------------------------------------

  function submitOnEnter(textarea, form) {
    textarea.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
  }

  function selectedThread() {
    const role = ui.cxTab;
    return threadsOf(role).find((t) => threadKey(t) === ui.selected[role]) || null;
  }

  async function setTyping(on) {
    const role = ui.cxTab;
    if (on) {
      const thread = selectedThread();
      if (role !== "chat" || !thread || ui.typingOn) return;
      ui.typingOn = { channel_id: thread.channel_id, thread_id: thread.thread_id };
      await sendTyping(ui.typingOn, true);
    } else if (ui.typingOn) {
      const target = ui.typingOn;
      ui.typingOn = null;
      await sendTyping(target, false);
    }
  }

  async function sendTyping(target, on) {
    try {
      const result = await postJSON("/api/cx/typing", { ...target, on });
      const problem = gatewayProblem(result);
      if (problem) setStatus($("reply-status"), `typing indicator: ${problem}`, true);
    } catch (error) {
      setStatus($("reply-status"), `typing indicator: ${error.message}`, true);
    }
  }

  function switchTab(prefix, tab, names) {
    for (const name of names) {
      const button = $(`${prefix}-tab-${name}`);
      const active = name === tab;
      button.setAttribute("aria-selected", active ? "true" : "false");
      button.tabIndex = active ? 0 : -1;
      if (prefix === "wh") $(`wh-panel-${name}`).hidden = !active;
      else if (active) $("cx-panel").setAttribute("aria-labelledby", button.id);
    }
  }

  // Arrow keys move between the tabs of a tab list (the inactive tabs are out of the Tab order).
  function arrowKeys(prefix, names) {
    names.forEach((name, index) => {
      $(`${prefix}-tab-${name}`).addEventListener("keydown", (event) => {
        const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
        if (!step) return;
        event.preventDefault();
        const next = $(`${prefix}-tab-${names[(index + step + names.length) % names.length]}`);
        next.click();
        next.focus();
      });
    });
  }

  function wire() {
    $("animal").addEventListener("change", (event) => {
      ui.animal = event.target.value;
      remember("byoc-sandbox-animal", ui.animal);
      render();
    });

    for (const name of ["chat", "board"]) {
      $(`wh-tab-${name}`).addEventListener("click", () => {
        ui.whTab = name;
        switchTab("wh", name, ["chat", "board"]);
      });
      $(`cx-tab-${name}`).addEventListener("click", () => {
        ui.cxTab = name;
        ui.replyTo = null;
        switchTab("cx", name, ["chat", "board"]);
        for (const item of ui.threadItems.values()) item.root.remove();
        ui.threadItems.clear();
        renderDesk();
      });
    }

    arrowKeys("wh", ["chat", "board"]);
    arrowKeys("cx", ["chat", "board"]);
    switchTab("cx", "chat", ["chat", "board"]);

    const dmForm = $("dm-form");
    submitOnEnter($("dm-text"), dmForm);
    dmForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const text = $("dm-text").value.trim();
      if (!text) return setStatus($("dm-status"), "write something first", true);
      try {
        await postJSON("/api/wh/dm", { user_id: ui.animal, text });
        $("dm-text").value = "";
        setStatus($("dm-status"), "");
        await refresh();
      } catch (error) {
        setStatus($("dm-status"), error.message, true);
      }
    });
    $("dm-close").addEventListener("click", async () => {
      const open = ((ui.wh && ui.wh.conversations) || []).filter((c) => c.participants[0] === ui.animal && !c.closed);
      try {
        for (const conv of open) await postJSON("/api/wh/close", { conversation_id: conv.id, by: "user" });
        await refresh();
      } catch (error) {
        setStatus($("dm-status"), error.message, true);
      }
    });

    $("post-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const title = $("post-title").value.trim();
      const body = $("post-body").value.trim();
      if (!title || !body) return setStatus($("post-status"), "a post needs a title and a text", true);
      try {
        await postJSON("/api/wh/post", { user_id: ui.animal, title, body });
        $("post-title").value = "";
        $("post-body").value = "";
        setStatus($("post-status"), "");
        await refresh();
      } catch (error) {
        setStatus($("post-status"), error.message, true);
      }
    });

    const replyForm = $("reply-form");
    const replyText = $("reply-text");
    submitOnEnter(replyText, replyForm);
    replyText.addEventListener("focus", () => setTyping(true));
    replyText.addEventListener("blur", () => setTyping(false));
    replyForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const thread = selectedThread();
      const text = replyText.value.trim();
      if (!thread) return;
      if (!text) return setStatus($("reply-status"), "write something first", true);
      const payload = { channel_id: thread.channel_id, thread_id: thread.thread_id, text };
      if (ui.cxTab === "board") payload.reply_to = ui.replyTo ? ui.replyTo.id : thread.thread_id;
      setStatus($("reply-status"), "sending\u2026");
      try {
        const result = await postJSON("/api/cx/reply", payload);
        const problem = gatewayProblem(result);
        if (problem) {
          setStatus($("reply-status"), problem, true);
        } else {
          replyText.value = "";
          ui.replyTo = null;
          setStatus($("reply-status"), "");
        }
        await refresh();
      } catch (error) {
        setStatus($("reply-status"), error.message, true);
      }
    });
    $("reply-to-clear").addEventListener("click", () => {
      ui.replyTo = null;
      renderDesk();
    });

    $("proactive-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const to = $("proactive-to").value;
      const text = $("proactive-text").value.trim();
      if (!to || !text) return setStatus($("proactive-status"), "choose an animal and write something", true);
      try {
        const result = await postJSON("/api/cx/proactive", {
          channel_id: ui.info.channels.chat,
          recipient_id: to,
          recipient_name: nameOf(to),
          text,
        });
        const problem = gatewayProblem(result);
        if (problem) return setStatus($("proactive-status"), problem, true);
        $("proactive-text").value = "";
        setStatus($("proactive-status"), "sent");
        ui.selected.chat = `${ui.info.channels.chat}\u0000${result.thread_id}`;
        await refresh();
      } catch (error) {
        setStatus($("proactive-status"), error.message, true);
      }
    });

    window.addEventListener("pagehide", () => {
      if (ui.typingOn) {
        const body = JSON.stringify({ ...ui.typingOn, on: false });
        fetch("/api/cx/typing", { method: "POST", headers: { "Content-Type": "application/json" }, body, keepalive: true });
      }
    });
  }

  function renderInfo() {
    const list = $("info-list");
    const urls = ui.info.urls || {};
    const rows = [
      ["Gateway, CXone side", urls.gateway_cxone],
      ["Integration box", urls.integration_box],
      ["Gateway webhook URL", urls.webhook],
      ["Gateway status", urls.status],
      ["Admin token", ui.info.admin_token],
      ["CXone simulator", urls.cxone_sim],
      ["Watering Hole simulator", urls.watering_hole_sim],
    ];
    list.replaceChildren(...rows.filter(([, v]) => v).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, el("code", {}, v))]));
    $("agent-name").textContent = ui.info.agent ? `Agent: ${ui.info.agent}` : "";
  }

  async function main() {
    wire();
    for (;;) {
      try {
        ui.info = await getJSON("/api/info");
        break;
      } catch (error) {
        connection(`cannot reach the sandbox (${error.message})`, false);
        await sleep(2000);
      }
    }
    renderInfo();
    try {
      await refresh();
      connection("live", true);
    } catch (error) {
      connection(`reconnecting (${error.message})`, false);
    }
    pollForever();
  }

  main();
})();
