// swfed web client: plain DOM, no library, no build step.
//
// Rules this file keeps:
// - Everything a person or a peer wrote (bodies, names, room names, reaction
//   keys, error messages) reaches the page through text nodes (h() below,
//   textContent), never parsed as HTML: no HTML-string sink is used here.
// - The session is an HttpOnly cookie; every request also sends the
//   X-SWFed-CSRF header the server asks of cookie requests that change things.
//   No token is kept in JavaScript or put in a URL.
// - Live updates come from /v1/me/stream (EventSource). The browser resumes
//   with Last-Event-ID; after any reconnect the client also re-reads what it
//   shows, so a dropped connection leaves no gap.
'use strict';

(() => {
  // ---------------------------------------------------------------- helpers

  /** Make an element; string children become text nodes (never HTML). */
  function h(tag, props, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.className = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k === 'value' || k === 'checked' || k === 'selected') el[k] = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : String(kid));
    }
    return el;
  }

  /** User-written text, isolated so bidi controls cannot reorder the page around it. */
  const txt = (s, cls) => h('bdi', { class: cls || null }, String(s ?? ''));
  const $ = (sel, root) => (root || document).querySelector(sel);
  const cls = (...names) => names.filter(Boolean).join(' ');
  const enc = encodeURIComponent;

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body) {
    const headers = { 'X-SWFed-CSRF': '1', Accept: 'application/json' };
    const opts = { method, headers, credentials: 'same-origin', cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    let r;
    try {
      r = await fetch(path, opts);
    } catch (e) {
      throw new ApiError(0, 'NETWORK', 'the server cannot be reached: ' + e.message);
    }
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (!r.ok) {
      const err = data && data.error ? data.error : {};
      const e = new ApiError(r.status, err.code || 'HTTP_' + r.status,
        err.message || 'the server answered ' + r.status);
      if (r.status === 401 && S.me && path !== '/v1/login') signedOut();
      throw e;
    }
    return data;
  }

  const errText = (e) => (e && e.code ? e.code + ': ' : '') + (e && e.message ? e.message : e);

  function fmtTime(ms) {
    if (!ms) return '';
    const d = new Date(ms);
    const now = new Date();
    const sameDay = d.toDateString() === now.toDateString();
    return sameDay ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
      : d.toLocaleString([], { dateStyle: 'short', timeStyle: 'short' });
  }

  const store = {
    key: (k) => 'swfed:' + (S.me ? S.me.fqid : '-') + ':' + k,
    get(k, dflt) {
      try {
        const v = localStorage.getItem(store.key(k));
        return v === null ? dflt : JSON.parse(v);
      } catch (e) { return dflt; }
    },
    set(k, v) { try { localStorage.setItem(store.key(k), JSON.stringify(v)); } catch (e) { /* full */ } },
  };

  // ------------------------------------------------------------------ state

  const S = {
    me: null,
    rooms: new Map(), // room_id -> {room, unread}
    current: null, // room_id of the open room
    events: new Map(), // event_id -> event, the open room
    next: undefined, // paging cursor of the open room; null: its start is loaded
    members: [],
    notifications: [], // newest first
    replyTo: null,
    editing: null, // the message of mine the composer edits
    typing: new Map(), // room_id -> user -> until (ms): who is typing
    typingSent: null, // {room, at}: my last typing signal
    view: 'none', // room | admin | none
    es: null,
    live: false,
    everLive: false,
    lastStreamId: null,
    retryMs: 1000,
    counted: new Set(), // event ids already counted as unread
    notified: new Set(), // event ids already counted for the title and the desktop
    nodes: new Map(), // event_id -> {sig, node}: the open room's rendered events
  };

  // ------------------------------------------------------------------- ids

  const serverOf = (fqid) => String(fqid).slice(String(fqid).indexOf(':') + 1);
  const isLocal = (fqid) => S.me && serverOf(fqid) === S.me.server_name;
  /** What people see: @id for ours, @id:server for foreign ones. */
  const showId = (fqid) => (isLocal(fqid) ? String(fqid).split(':')[0] : String(fqid));
  /** A typed id (@bob, @bob:b.test) made fully qualified against a server. */
  function qualify(id, server) {
    let s = String(id).trim();
    if (!s.startsWith('@')) s = '@' + s;
    return s.includes(':') ? s.toLowerCase() : s.toLowerCase() + ':' + server;
  }
  function nameOf(fqid) {
    const m = S.members.find((x) => x.fqid === fqid);
    return m ? m.display_name : String(fqid).split(':')[0].slice(1);
  }

  // Mentions look like @local or @local:server (optional :port).
  const MENTION_RE = /@[a-z0-9._=\-/]+(?::[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?(?::\d{1,5})?)?/gi;

  function mentionsIn(body) {
    const found = [];
    const members = new Set(S.members.map((m) => m.fqid));
    for (const m of String(body).matchAll(MENTION_RE)) {
      let tok = m[0];
      for (;;) {
        const fq = qualify(tok, S.me.server_name);
        if (members.has(fq)) { if (!found.includes(fq)) found.push(fq); break; }
        if (!/[.\-_=/]$/.test(tok)) break;
        tok = tok.slice(0, -1);
      }
    }
    return found;
  }

  // ------------------------------------------------------------------ login

  function showLogin(message) {
    closeStream();
    closeDialog();
    S.me = null;
    document.body.classList.remove('in-room', 'offline');
    const app = $('#app');
    app.className = 'login-page';
    const err = h('p', { id: 'login-error', class: 'error', role: 'alert' }, message || '');
    const user = h('input', { id: 'login-user', name: 'username', autocomplete: 'username',
      required: true, autocapitalize: 'none', spellcheck: 'false', placeholder: 'alice' });
    const pass = h('input', { id: 'login-password', name: 'password', type: 'password',
      autocomplete: 'current-password', required: true });
    const button = h('button', { id: 'login-submit', type: 'submit', class: 'primary' }, 'Sign in');
    const form = h('form', { class: 'login', onsubmit: async (ev) => {
      ev.preventDefault();
      button.disabled = true;
      err.textContent = '';
      try {
        await api('POST', '/v1/login', { local_id: user.value, password: pass.value });
        pass.value = '';
        await start();
      } catch (e) {
        err.textContent = e.code === 'SW_LOGIN_FAILED' ? 'Wrong user name or password.' : errText(e);
        button.disabled = false;
        pass.focus();
      }
    } },
    h('h1', {}, 'swfed'),
    h('p', { class: 'host' }, 'Sign in to ', h('strong', {}, location.host)),
    h('label', { for: 'login-user' }, 'User name'), user,
    h('label', { for: 'login-password' }, 'Password'), pass,
    button, err,
    h('p', { class: 'hint' }, 'No password yet? Your admin sets one with ',
      h('code', {}, 'swfed admin user set-password NAME'), '.'));
    app.replaceChildren(form);
    user.focus();
  }

  function signedOut() {
    showLogin('You were signed out. Sign in again.');
  }

  async function logout() {
    try { await api('POST', '/v1/logout'); } catch (e) { /* signed out anyway */ }
    showLogin('Signed out.');
  }

  // ------------------------------------------------------------------- shell

  function buildShell() {
    const app = $('#app');
    app.className = 'shell';
    app.replaceChildren(
      h('aside', { id: 'sidebar', 'aria-label': 'Rooms' },
        h('header', { class: 'me' },
          h('div', { class: 'who' },
            h('strong', { id: 'me-name' }, txt(S.me.display_name)),
            h('span', { class: 'muted', id: 'me-id' }, S.me.fqid)),
          h('div', { class: 'tools' },
            h('button', { id: 'bell', class: 'icon', title: 'Notifications', 'aria-label': 'Notifications',
              onclick: () => { askNotifyPermission(); showNotifications(); } }, '🔔', h('span', { id: 'bell-count', class: 'count', hidden: true })),
            S.me.admin ? h('button', { id: 'admin-button', class: 'icon', title: 'Federation admin',
              'aria-label': 'Federation admin', onclick: () => showAdmin('peers') }, '⚙') : null,
            h('button', { id: 'logout', class: 'icon', title: 'Sign out', 'aria-label': 'Sign out',
              onclick: logout }, '⎋'))),
        h('div', { id: 'conn', class: 'conn', role: 'status' }, 'connecting…'),
        h('form', { class: 'search', role: 'search', onsubmit: (ev) => { ev.preventDefault(); runSearch(); } },
          h('input', { id: 'search', type: 'search', placeholder: 'Search messages (Ctrl+K)',
            'aria-label': 'Search messages' })),
        h('nav', {},
          h('div', { class: 'section' }, h('h2', {}, 'Rooms'),
            h('button', { id: 'new-room', class: 'icon', title: 'New room', 'aria-label': 'New room',
              onclick: newRoomDialog }, '+')),
          h('ul', { id: 'room-list', class: 'rooms' }),
          h('div', { class: 'section' }, h('h2', {}, 'Direct messages'),
            h('button', { id: 'new-dm', class: 'icon', title: 'New direct message',
              'aria-label': 'New direct message', onclick: newDmDialog }, '+')),
          h('ul', { id: 'dm-list', class: 'rooms' }))),
      h('main', { id: 'main' },
        h('div', { class: 'empty' }, h('p', {}, 'Pick a room, or start one with +.'))),
      h('aside', { id: 'members', hidden: true, 'aria-label': 'Members' }),
      h('div', { id: 'offline', role: 'status' }, '↻ Reconnecting… new messages will catch up.'));
  }

  function setConn(state) {
    const el = $('#conn');
    if (!el) return;
    el.className = 'conn ' + state;
    el.textContent = state === 'live' ? 'live' : state === 'reconnecting'
      ? 'reconnecting… (messages will catch up)' : 'connecting…';
    document.body.classList.toggle('offline', state === 'reconnecting');
  }

  // ------------------------------------------------------------------ rooms

  async function loadRooms() {
    const data = await api('GET', '/v1/me/rooms');
    const seen = new Set();
    for (const room of data.data) {
      seen.add(room.room_id);
      const entry = S.rooms.get(room.room_id);
      // the server keeps read state (every device of mine agrees): one request, no more
      const fromServer = { unread: room.unread || 0, mentions: room.mentions || 0 };
      if (entry) Object.assign(entry, { room }, fromServer);
      else S.rooms.set(room.room_id, { room, ...fromServer });
    }
    for (const id of [...S.rooms.keys()]) if (!seen.has(id)) S.rooms.delete(id);
    renderRooms();
    if (S.current && S.rooms.has(S.current)) renderRoomHead();
  }

  /** A DM made by the server is named "@a:x & @b:y": show the other person. */
  function roomLabel(room) {
    const name = room.name || room.room_id;
    if (room.type === 'dm' && S.me) {
      const parts = name.split(' & ');
      const mine = [S.me.fqid, S.me.id];
      if (parts.length === 2 && parts.some((p) => mine.includes(p))) {
        const other = parts.find((p) => !mine.includes(p));
        if (other && other.startsWith('@')) return showId(qualify(other, S.me.server_name));
      }
    }
    return name;
  }

  function renderRooms() {
    const rooms = $('#room-list');
    const dms = $('#dm-list');
    if (!rooms) return;
    // most recent activity first (then by name)
    const items = [...S.rooms.values()].sort((a, b) => ((b.room.last_activity || 0) - (a.room.last_activity || 0))
      || roomLabel(a.room).localeCompare(roomLabel(b.room)));
    renderTitle();
    const li = ({ room, unread, mentions }) => h('li', {},
      h('button', { class: cls('room-item', room.room_id === S.current && S.view === 'room' && 'active',
        unread && 'unread'), dataset: { roomId: room.room_id },
        'aria-current': room.room_id === S.current ? 'true' : null,
        onclick: () => openRoom(room.room_id) },
        h('span', { class: 'name' }, txt(roomLabel(room))),
        room.federated ? h('span', { class: 'globe', title: 'federated: members of other servers' }, '🌐') : null,
        mentions ? h('span', { class: 'count mention-badge', 'aria-label': mentions + ' mentions' }, '@' + mentions) : null,
        unread ? h('span', { class: 'count', 'aria-label': unread + ' unread' }, unread >= 50 ? '50+' : String(unread)) : null));
    rooms.replaceChildren(...items.filter((e) => e.room.type !== 'dm').map(li));
    dms.replaceChildren(...items.filter((e) => e.room.type === 'dm').map(li));
    if (!rooms.children.length) rooms.append(h('li', { class: 'muted none' }, 'no rooms yet'));
    if (!dms.children.length) dms.append(h('li', { class: 'muted none' }, 'none yet'));
  }

  function markRead() {
    if (!S.current || document.visibilityState === 'hidden') return; // a hidden tab reads nothing
    const entry = S.rooms.get(S.current);
    if (!entry) return;
    let max = entry.room.read_seq || 0;
    for (const e of S.events.values()) if (e.status === 'sent' && (e.seq || 0) > max) max = e.seq;
    if (entry.unread || entry.mentions) { entry.unread = 0; entry.mentions = 0; renderRooms(); }
    if (max > (entry.room.read_seq || 0)) {
      entry.room.read_seq = max;
      const roomId = S.current;
      api('POST', `/v1/rooms/${enc(roomId)}/read`, { seq: max }).catch(() => {});
    }
  }

  /** My read marker moved (on this device or another): the counts follow. */
  function onRead(r) {
    const entry = S.rooms.get(r.room_id);
    if (!entry || (entry.room.read_seq || 0) >= r.read_seq) return;
    entry.room.read_seq = r.read_seq;
    loadRooms().catch(() => {});
  }

  async function openRoom(roomId, focusEvent) {
    if (!S.rooms.has(roomId)) await loadRooms();
    if (!S.rooms.has(roomId)) { toast('You are not in that room (yet).'); return; }
    const same = S.current === roomId && S.view === 'room';
    S.current = roomId;
    S.view = 'room';
    document.body.classList.add('in-room');
    if (!same) {
      S.events = new Map();
      S.nodes = new Map();
      S.next = undefined;
      S.members = [];
      S.replyTo = null;
      buildRoomView();
      renderRooms();
      await Promise.all([loadOlder(true), loadMembers()]);
    }
    if (focusEvent) await jumpTo(focusEvent);
    else if (!same) $('#composer-input').focus();
    markRead();
  }

  function buildRoomView() {
    const input = h('textarea', { id: 'composer-input', rows: 1, placeholder: 'Message… (@ to mention)',
      'aria-label': 'Message', 'aria-autocomplete': 'list', 'aria-controls': 'complete', oninput: onComposerInput,
      onkeydown: onComposerKey });
    $('#main').replaceChildren(
      h('header', { id: 'room-head', class: 'room-head' }),
      h('div', { id: 'timeline', class: 'timeline', tabindex: '0', 'aria-label': 'Messages',
        onscroll: onTimelineScroll, onkeydown: onTimelineKey },
        h('button', { id: 'load-older', class: 'link', onclick: () => loadOlder(false) }, 'Load older messages'),
        h('ol', { id: 'events', 'aria-label': 'Messages' })),
      h('div', { id: 'announce', class: 'sr-only', role: 'status', 'aria-live': 'polite' }),
      h('div', { id: 'typing', class: 'typing muted', 'aria-live': 'polite' }),
      h('div', { id: 'reply-bar', class: 'reply-bar', hidden: true }),
      h('form', { id: 'composer', class: 'composer', onsubmit: (ev) => { ev.preventDefault(); send(); } },
        h('ul', { id: 'complete', class: 'complete', role: 'listbox', hidden: true }),
        input,
        h('button', { id: 'send', type: 'submit', class: 'primary' }, 'Send')),
      h('p', { id: 'composer-error', class: 'error', role: 'alert' }));
    // files and images (media.js): attach button, paste, drag-and-drop
    window.SwfedMedia.composer({ form: $('#composer'), dropZone: $('#main'), currentRoom: () => S.current,
      onError: (msg) => { $('#composer-error').textContent = msg; } });
    renderRoomHead();
  }

  function renderRoomHead() {
    const head = $('#room-head');
    const entry = S.rooms.get(S.current);
    if (!head || !entry) return;
    const room = entry.room;
    head.replaceChildren(
      h('button', { class: 'icon back', 'aria-label': 'Back to rooms', onclick: () => {
        document.body.classList.remove('in-room');
      } }, '←'),
      h('div', { class: 'title' },
        h('h1', { id: 'room-title' }, txt(roomLabel(room)),
          room.federated ? h('span', { id: 'fed-badge', class: 'globe', role: 'img',
            title: 'Federated: members of other servers are in this room',
            'aria-label': 'federated' }, ' 🌐') : null),
        h('span', { class: 'muted meta' }, room.type, ' · hosted by ', txt(room.host),
          room.federate && !room.federated ? ' · federation on' : '')),
      h('div', { class: 'tools' },
        h('button', { id: 'call-button', title: 'Join the call', onclick: startCall }, '📞 Call'),
        room.host === S.me.server_name ? h('button', { id: 'invite-button', onclick: inviteDialog }, 'Invite') : null,
        h('button', { id: 'members-toggle', 'aria-expanded': String(!$('#members').hidden),
          onclick: toggleMembers }, 'Members'),
        h('button', { id: 'room-settings', class: 'icon', title: 'Room settings', 'aria-label': 'Room settings',
          onclick: roomSettings }, '⋯')));
  }

  function roomSettings() {
    const room = S.rooms.get(S.current).room;
    const msg = h('p', { role: 'status', id: 'room-settings-msg' });
    const say = (text, bad) => { msg.className = bad ? 'error' : ''; msg.textContent = text; };
    const federate = h('input', { id: 'room-federate', type: 'checkbox', checked: !!room.federate,
      onchange: async () => {
        try {
          const updated = await api('PATCH', `/v1/rooms/${enc(room.room_id)}`, { federate: federate.checked });
          S.rooms.get(room.room_id).room = updated;
          renderRoomHead();
          renderRooms();
          say(updated.federate ? 'Federation is on for this room here.' : 'Federation is off for this room here.');
        } catch (e) { federate.checked = !federate.checked; say(errText(e), true); }
      } });
    const hostedElsewhere = room.host !== S.me.server_name;
    openDialog('Room settings', h('div', { class: 'stack' },
      h('p', {}, h('strong', {}, txt(roomLabel(room))), h('br'),
        h('span', { class: 'muted' }, txt(room.room_id), ' · ', room.type, ' · hosted by ', txt(room.host))),
      h('label', { class: 'check' }, federate, ' Federate (this server\'s half of the room\'s switch; the room\'s creator or an admin)'),
      S.me.admin && hostedElsewhere ? h('button', { id: 'room-backfill', onclick: async (ev) => {
        ev.currentTarget.disabled = true;
        try {
          const r = await api('POST', `/v1/admin/rooms/${enc(room.room_id)}/federation/backfill`);
          say(`Pulled ${r.pulled} event(s) from ${room.host}: ${r.events} new, ${r.refused} refused.`);
          if (S.current === room.room_id) { S.events = new Map(); S.next = undefined; loadOlder(true); }
        } catch (e) { say(errText(e), true); }
        ev.currentTarget.disabled = false;
      } }, 'Pull history from the host (backfill)') : null,
      h('button', { id: 'room-leave', class: 'decline', onclick: async () => {
        if (!confirm('Leave this room?')) return;
        try {
          await api('POST', `/v1/rooms/${enc(room.room_id)}/leave`);
          closeDialog();
          S.current = null;
          S.view = 'none';
          $('#main').replaceChildren(h('div', { class: 'empty' }, h('p', {}, 'You left the room.')));
          $('#members').hidden = true;
          document.body.classList.remove('in-room');
          await loadRooms();
        } catch (e) { say(errText(e), true); }
      } }, 'Leave room'),
      msg), 'room-settings');
  }

  // --------------------------------------------------------------- timeline

  function sortedEvents() {
    return [...S.events.values()].sort((a, b) => {
      const sa = a.seq ?? Infinity;
      const sb = b.seq ?? Infinity;
      return sa !== sb ? sa - sb : (a.origin_ts || 0) - (b.origin_ts || 0);
    });
  }

  async function loadOlder(first) {
    if (S.next === null) return false;
    const room = S.current;
    const before = S.next === undefined ? '' : '&before=' + enc(S.next);
    const button = $('#load-older');
    if (button) button.disabled = true;
    let page;
    try {
      page = await api('GET', `/v1/rooms/${enc(room)}/messages?limit=50${before}`);
    } catch (e) {
      toast(errText(e));
      if (button) button.disabled = false;
      return false;
    }
    if (room !== S.current) return false;
    const tl = $('#timeline');
    const fromBottom = tl ? tl.scrollHeight - tl.scrollTop : 0;
    for (const ev of page.data) if (!S.events.has(ev.event_id)) S.events.set(ev.event_id, ev);
    S.next = page.next ?? null;
    renderTimeline();
    if (tl) tl.scrollTop = first ? tl.scrollHeight : tl.scrollHeight - fromBottom;
    return page.data.length > 0;
  }

  function onTimelineScroll() {
    const tl = $('#timeline');
    if (tl.scrollTop < 40 && S.next && !S.loadingOlder) {
      S.loadingOlder = true;
      loadOlder(false).finally(() => { S.loadingOlder = false; });
    }
    if (tl.scrollHeight - tl.scrollTop - tl.clientHeight < 30) markRead();
  }

  function renderTimeline() {
    const list = $('#events');
    if (!list) return;
    const tl = $('#timeline');
    const atBottom = tl.scrollHeight - tl.scrollTop - tl.clientHeight < 60;
    const events = sortedEvents();
    const reactions = new Map(); // target -> key -> [senders]
    for (const e of events) {
      if (e.type !== 'reaction' || e.status === 'refused') continue;
      const c = e.content || {};
      if (c.deleted || typeof c.key !== 'string') continue; // taken off
      if (!reactions.has(c.relates_to)) reactions.set(c.relates_to, new Map());
      const keys = reactions.get(c.relates_to);
      if (!keys.has(c.key)) keys.set(c.key, []);
      if (!keys.get(c.key).includes(e.sender)) keys.get(c.key).push(e.sender);
    }
    // Keyed update: an unchanged event keeps its node where it is, so a
    // focused button (keyboard users) or a flash survives new messages.
    const items = [];
    const nodes = new Map();
    if (S.next === null) {
      const start = (S.nodes.get('start') || {}).node || h('li', { class: 'sys start' }, 'This is the start of the room.');
      nodes.set('start', { node: start });
      items.push(start);
    }
    for (const e of events) {
      const rs = reactions.get(e.event_id);
      const target = e.content && e.content.in_reply_to ? S.events.get(e.content.in_reply_to) : null;
      const sig = JSON.stringify([e, rs ? [...rs.entries()] : null, nameOf(e.sender),
        target ? [nameOf(target.sender), (target.content || {}).body] : null]);
      const old = S.nodes.get(e.event_id);
      const node = old && old.sig === sig ? old.node : renderEvent(e, rs);
      if (!node) continue;
      nodes.set(e.event_id, { sig, node });
      items.push(node);
    }
    S.nodes = nodes;
    const keep = new Set(items);
    for (const child of [...list.children]) if (!keep.has(child)) child.remove();
    items.forEach((node, i) => {
      if (list.children[i] !== node) list.insertBefore(node, list.children[i] || null);
    });
    while (list.children.length > items.length) list.lastElementChild.remove();
    const older = $('#load-older');
    older.hidden = S.next === null;
    older.disabled = false;
    if (atBottom) tl.scrollTop = tl.scrollHeight;
  }

  /** Plain text with its mentions marked, appended to ``out`` as text nodes. */
  function appendMentions(out, text, set, senderServer) {
    let last = 0;
    for (const m of text.matchAll(MENTION_RE)) {
      let tok = m[0];
      let fq = qualify(tok, senderServer);
      while (!set.has(fq) && /[.\-_=/]$/.test(tok)) { tok = tok.slice(0, -1); fq = qualify(tok, senderServer); }
      if (!set.has(fq)) continue;
      out.append(text.slice(last, m.index));
      out.append(h('span', { class: cls('mention', fq === S.me.fqid && 'me'), title: fq }, txt(tok)));
      last = m.index + tok.length;
    }
    out.append(text.slice(last));
  }

  // Inline formatting: `code`, **bold**, *italic* / _italic_, and links. Every piece
  // is a text node inside an element we make: never HTML from a body.
  const INLINE_RE = /(`[^`\n]+`)|(\*\*[^*\n]+\*\*)|(\*[^*\s][^*\n]*\*|\b_[^_\s][^_\n]*_\b)|((?:https?:\/\/|mailto:)[^\s<>"]+)/gi;
  /** Only these schemes become links; anything else stays text. */
  function safeHref(raw) {
    const url = raw.replace(/[.,;:!?)\]'"]+$/, '');
    try {
      const u = new URL(url);
      if (!['http:', 'https:', 'mailto:'].includes(u.protocol)) return null;
      return { url, href: u.href };
    } catch (e) { return null; }
  }

  function appendInline(out, text, set, senderServer) {
    let last = 0;
    for (const m of text.matchAll(INLINE_RE)) {
      const [tok, code, bold, italic, link] = m;
      let used = tok;
      let node = null;
      if (code) node = h('code', {}, tok.slice(1, -1));
      else if (bold) { node = h('strong', {}); appendMentions(node, tok.slice(2, -2), set, senderServer); }
      else if (italic) { node = h('em', {}); appendMentions(node, tok.slice(1, -1), set, senderServer); }
      else if (link) {
        const safe = safeHref(tok);
        if (!safe) continue;
        used = safe.url;
        node = h('a', { href: safe.href, target: '_blank', rel: 'noopener noreferrer' }, used);
      }
      appendMentions(out, text.slice(last, m.index), set, senderServer);
      out.append(node);
      last = m.index + used.length;
    }
    appendMentions(out, text.slice(last), set, senderServer);
  }

  /** A body, formatted: ``` code blocks, > quotes, inline formatting; text nodes only. */
  function renderBody(body, mentions, senderServer) {
    const out = h('div', { class: 'body', dir: 'auto' });
    const text = String(body ?? '');
    const set = new Set(mentions || []);
    const parts = text.split(/```/);
    parts.forEach((part, i) => {
      if (i % 2 === 1 && i < parts.length - 1) {
        out.append(h('pre', { class: 'code' }, h('code', {}, part.replace(/^\n/, ''))));
        return;
      }
      const chunk = i % 2 === 1 ? '```' + part : part;
      const lines = chunk.split('\n');
      let quote = null;
      lines.forEach((line, j) => {
        if (/^> ?/.test(line)) {
          if (!quote) { quote = h('blockquote', {}); out.append(quote); } else quote.append('\n');
          appendInline(quote, line.replace(/^> ?/, ''), set, senderServer);
          return;
        }
        quote = null;
        appendInline(out, line, set, senderServer);
        if (j < lines.length - 1) out.append('\n');
      });
    });
    return out;
  }

  function renderEvent(e, reactions) {
    const c = e.content || {};
    if (e.type === 'message' && c.deleted) {
      return h('li', { class: 'msg deleted', id: 'ev-' + e.event_id, dataset: { eventId: e.event_id }, tabindex: '-1' },
        h('div', { class: 'line' }, h('span', { class: 'sender', title: e.sender }, txt(nameOf(e.sender))),
          h('time', { class: 'muted', datetime: new Date(e.origin_ts || 0).toISOString() }, fmtTime(e.origin_ts))),
        h('div', { class: 'body muted tombstone' }, '🗑 message deleted',
          c.deleted.by && c.deleted.by !== e.sender ? [' by ', txt(nameOf(c.deleted.by))] : null));
    }
    if (e.type === 'message') {
      const mine = e.sender === S.me.fqid;
      const mentionsMe = Array.isArray(c.mentions) && c.mentions.includes(S.me.fqid);
      const status = e.status || null;
      const item = h('li', { class: cls('msg', mine && 'mine', mentionsMe && 'mentions-me', status && 'st-' + status),
        id: 'ev-' + e.event_id, dataset: { eventId: e.event_id, sender: e.sender }, tabindex: '-1' });
      item.append(h('div', { class: 'line' },
        h('span', { class: 'sender', title: e.sender }, txt(nameOf(e.sender))),
        h('span', { class: 'sender-id muted' }, txt(showId(e.sender))),
        !isLocal(e.sender) ? h('span', { class: 'tag foreign', title: 'from another server' }, '🌐') : null,
        h('time', { class: 'muted', datetime: new Date(e.origin_ts || 0).toISOString() }, fmtTime(e.origin_ts))));
      if (c.in_reply_to) {
        const target = S.events.get(c.in_reply_to);
        item.append(h('button', { class: 'reply-quote', type: 'button', dataset: { target: c.in_reply_to },
          onclick: () => jumpTo(c.in_reply_to) },
        '↪ ', target ? [h('strong', {}, txt(nameOf(target.sender))), ': ',
          (target.content || {}).deleted ? h('em', {}, 'deleted message')
            : txt(String((target.content || {}).body ?? '').slice(0, 140))]
          : 'a message further back'));
      }
      item.append(renderBody(c.body, c.mentions, serverOf(e.sender)));
      if (c.edited_at) item.append(h('span', { class: 'edited muted', title: 'edited ' + fmtTime(c.edited_at) }, '(edited)'));
      const files = window.SwfedMedia.render(c.attachments); // media.js
      if (files) item.append(files);
      if (status === 'pending') item.append(h('div', { class: 'status' }, '⏱ sending…'));
      if (status === 'refused') {
        const err = e.error || {};
        item.append(h('div', { class: 'status error' }, '⚠ not delivered: ',
          txt((err.code ? err.code + ': ' : '') + (err.message || 'refused'))));
      }
      if (reactions && reactions.size) {
        item.append(h('div', { class: 'reactions' }, [...reactions.entries()].map(([key, who]) =>
          h('button', { class: cls('reaction', who.includes(S.me.fqid) && 'mine'), type: 'button',
            dataset: { key }, title: who.map(showId).join(', '),
            'aria-pressed': who.includes(S.me.fqid) ? 'true' : 'false',
            onclick: () => (who.includes(S.me.fqid) ? unreact(e.event_id, key) : react(e.event_id, key)) },
          txt(key), ' ', h('span', { class: 'n' }, String(who.length))))));
      }
      item.append(h('div', { class: 'actions' },
        h('button', { class: 'reply-button', type: 'button', onclick: () => setReply(e) }, 'Reply'),
        h('button', { class: 'react-button', type: 'button', 'aria-haspopup': 'true',
          onclick: (ev) => reactPicker(ev.currentTarget, e) }, 'React'),
        mine && status !== 'refused' ? h('button', { class: 'edit-button', type: 'button', onclick: () => startEdit(e) }, 'Edit') : null,
        mine || S.me.admin ? h('button', { class: 'delete-button', type: 'button', onclick: () => deleteMessage(e) }, 'Delete') : null));
      return item;
    }
    if (e.type === 'member' || e.type === 'invite') {
      const who = showId(e.type === 'invite' ? (c.invitee || e.state_key || '') : e.sender);
      let what;
      if (e.type === 'invite') what = [txt(showId(e.sender)), ' invited ', txt(who || 'someone')];
      else if (c.membership === 'join') what = [txt(who), ' joined'];
      else if (c.membership === 'leave') what = [txt(who), ' left'];
      else if (c.membership === 'decline') what = [txt(who), ' declined the invite'];
      else what = [txt(who), ' ', txt(c.membership || e.type)];
      return h('li', { class: 'sys', id: 'ev-' + e.event_id, dataset: { eventId: e.event_id } }, what,
        h('time', { class: 'muted' }, ' · ', fmtTime(e.origin_ts)));
    }
    if (e.type === 'reaction' || e.type === 'edit' || e.type === 'delete') return null;
    return h('li', { class: 'sys' }, txt(e.type), ' event from ', txt(showId(e.sender)));
  }

  /** ↑/↓ move through the timeline's messages (then Tab reaches a message's actions);
   * Home/End go to the first and last. */
  function onTimelineKey(ev) {
    if (!['ArrowUp', 'ArrowDown', 'Home', 'End'].includes(ev.key)) return;
    if (ev.target.closest && ev.target.closest('.actions, .picker, .reactions')) return;
    const items = [...document.querySelectorAll('#events li[tabindex]')];
    if (!items.length) return;
    const at = items.indexOf(ev.target.closest ? ev.target.closest('li[tabindex]') : null);
    let next;
    if (ev.key === 'Home') next = 0;
    else if (ev.key === 'End') next = items.length - 1;
    else if (at < 0) next = ev.key === 'ArrowUp' ? items.length - 1 : 0;
    else next = Math.min(items.length - 1, Math.max(0, at + (ev.key === 'ArrowUp' ? -1 : 1)));
    ev.preventDefault();
    items[next].focus();
  }

  async function jumpTo(eventId) {
    for (let i = 0; i < 40 && !S.events.has(eventId) && S.next !== null; i++) {
      if (!(await loadOlder(false))) break;
    }
    const el = document.getElementById('ev-' + eventId);
    if (!el) { toast('That message is not in this room\'s history here.'); return; }
    el.scrollIntoView({ block: 'center' });
    el.classList.add('flash');
    el.focus({ preventScroll: true });
    setTimeout(() => el.classList.remove('flash'), 2500);
  }

  /** The server's copy replaces ours whole (a changed status comes as the same event_id). */
  function upsertEvent(e) {
    S.events.set(e.event_id, e);
  }

  // --------------------------------------------------------------- composer

  function setReply(e) {
    S.replyTo = e;
    const bar = $('#reply-bar');
    bar.hidden = false;
    bar.replaceChildren(h('span', {}, 'Replying to ', h('strong', {}, txt(nameOf(e.sender))), ': ',
      txt(String((e.content || {}).body ?? '').slice(0, 100))),
    h('button', { class: 'icon', type: 'button', 'aria-label': 'Cancel reply', onclick: clearReply }, '✕'));
    $('#composer-input').focus();
  }

  function clearReply() {
    S.replyTo = null;
    const bar = $('#reply-bar');
    if (bar) { bar.hidden = true; bar.replaceChildren(); }
  }

  async function send() {
    const input = $('#composer-input');
    const body = input.value.trim();
    const errEl = $('#composer-error');
    if (!body) return;
    if (S.editing) {
      const target = S.editing;
      const edit = { body };
      const ms = mentionsIn(body);
      if (ms.length) edit.mentions = ms;
      $('#send').disabled = true;
      try {
        await api('PATCH', `/v1/rooms/${enc(S.current)}/messages/${enc(target.event_id)}`, edit);
        cancelEdit();
        errEl.textContent = '';
      } catch (e) {
        errEl.textContent = 'Not edited: ' + errText(e);
      } finally {
        $('#send').disabled = false;
        input.focus();
      }
      return;
    }
    const payload = { body };
    if (S.replyTo) payload.in_reply_to = S.replyTo.event_id;
    const mentions = mentionsIn(body);
    if (mentions.length) payload.mentions = mentions;
    $('#send').disabled = true;
    try {
      const r = await api('POST', `/v1/rooms/${enc(S.current)}/messages`, payload);
      sendTyping(false);
      input.value = '';
      autosize(input);
      clearReply();
      errEl.textContent = '';
      if (!S.events.has(r.event_id)) {
        // shown at once; the stream brings the stored event (and its status)
        upsertEvent({ event_id: r.event_id, room_id: S.current, type: 'message', sender: S.me.fqid,
          origin_ts: Date.now(), content: Object.assign({}, payload), seq: null, status: 'pending' });
        renderTimeline();
      }
      const tl = $('#timeline');
      tl.scrollTop = tl.scrollHeight;
    } catch (e) {
      errEl.textContent = 'Not sent: ' + errText(e);
    } finally {
      $('#send').disabled = false;
      input.focus();
    }
  }

  async function react(eventId, key) {
    try {
      await api('POST', `/v1/rooms/${enc(S.current)}/messages/${enc(eventId)}/reactions`, { key });
    } catch (e) { toast('Reaction not sent: ' + errText(e)); }
  }

  async function unreact(eventId, key) {
    try {
      await api('DELETE', `/v1/rooms/${enc(S.current)}/messages/${enc(eventId)}/reactions/${enc(key)}`);
    } catch (e) { toast('Reaction not taken off: ' + errText(e)); }
  }

  /** Edit: the composer takes the message's body; Enter saves, Esc cancels. */
  function startEdit(e) {
    clearReply();
    S.editing = e;
    const input = $('#composer-input');
    input.value = String((e.content || {}).body ?? '');
    autosize(input);
    const bar = $('#reply-bar');
    bar.hidden = false;
    bar.replaceChildren(h('span', {}, 'Editing your message'),
      h('button', { class: 'icon', type: 'button', 'aria-label': 'Cancel edit', onclick: cancelEdit }, '✕'));
    input.focus();
  }

  function cancelEdit() {
    S.editing = null;
    const input = $('#composer-input');
    input.value = '';
    autosize(input);
    clearReply();
  }

  async function deleteMessage(e) {
    if (!window.confirm('Delete this message for everyone in the room?')) return;
    try {
      await api('DELETE', `/v1/rooms/${enc(S.current)}/messages/${enc(e.event_id)}`);
    } catch (err) { toast('Not deleted: ' + errText(err)); }
  }

  /** My newest message in the open room that can still be edited (↑ in an empty composer). */
  function lastOwnMessage() {
    const mine = sortedEvents().filter((e) => e.type === 'message' && e.sender === S.me.fqid
      && e.status !== 'refused' && !(e.content || {}).deleted);
    return mine.length ? mine[mine.length - 1] : null;
  }

  /** Tell the room I am typing: at most every 4 s while I type, and once when I stop. */
  function sendTyping(typing) {
    const now = Date.now();
    if (typing && S.typingSent && S.typingSent.room === S.current && now - S.typingSent.at < 4000) return;
    if (!typing && !(S.typingSent && S.typingSent.room === S.current)) return;
    S.typingSent = typing ? { room: S.current, at: now } : null;
    api('POST', `/v1/rooms/${enc(S.current)}/typing`, { typing }).catch(() => {});
  }

  function onTyping(t) {
    const room = S.typing.get(t.room_id) || new Map();
    if (t.typing) room.set(t.user, t.until); else room.delete(t.user);
    S.typing.set(t.room_id, room);
    renderTyping();
    if (t.typing) setTimeout(renderTyping, Math.max(0, t.until - Date.now()) + 100);
  }

  function renderTyping() {
    const el = $('#typing');
    if (!el) return;
    const now = Date.now();
    const who = [...(S.typing.get(S.current) || new Map()).entries()]
      .filter(([, until]) => until > now).map(([user]) => nameOf(user));
    el.replaceChildren(...(who.length ? [txt(who.slice(0, 3).join(', ')),
      who.length === 1 ? ' is typing…' : ' are typing…'] : []));
  }

  /** "(3) swfed": unread mentions and direct messages while I look elsewhere. */
  function renderTitle() {
    let n = 0;
    for (const e of S.rooms.values()) n += (e.mentions || 0) + (e.room.type === 'dm' ? e.unread || 0 : 0);
    document.title = n ? `(${n}) swfed` : 'swfed';
  }

  /** A desktop notification for a mention or a DM, when the tab is hidden (permission
   * is asked on a click: the bell). */
  function desktopNotify(e, entry) {
    const c = e.content || {};
    const mentionsMe = Array.isArray(c.mentions) && c.mentions.includes(S.me.fqid);
    if (document.visibilityState !== 'hidden' || !(mentionsMe || entry.room.type === 'dm')) return;
    if (!('Notification' in window) || Notification.permission !== 'granted') return;
    try {
      const note = new Notification(nameOf(e.sender) + ' · ' + roomLabel(entry.room),
        { body: String(c.body ?? '').slice(0, 200), tag: e.event_id });
      note.onclick = () => { window.focus(); openRoom(e.room_id, e.event_id); };
    } catch (err) { /* not allowed here */ }
  }

  function askNotifyPermission() {
    if ('Notification' in window && Notification.permission === 'default') {
      Notification.requestPermission().catch(() => {});
    }
  }

  const QUICK_REACTIONS = ['👍', '❤️', '😂', '🎉', '😮', '😢', '👀', '✅'];

  function reactPicker(anchor, e) {
    const existing = $('.picker');
    if (existing) existing.remove();
    const other = h('input', { class: 'picker-other', maxlength: 32, placeholder: 'other', 'aria-label': 'Other reaction' });
    const close = () => { picker.remove(); anchor.focus(); };
    const picker = h('div', { class: 'picker', role: 'menu', onkeydown: (ev) => { if (ev.key === 'Escape') close(); } },
      QUICK_REACTIONS.map((k) => h('button', { type: 'button', role: 'menuitem', class: 'pick', dataset: { key: k },
        onclick: () => { react(e.event_id, k); close(); } }, k)),
      h('form', { onsubmit: (ev) => { ev.preventDefault(); if (other.value.trim()) react(e.event_id, other.value.trim()); close(); } }, other));
    anchor.parentElement.append(picker);
    picker.querySelector('button').focus();
  }

  function autosize(ta) {
    ta.style.height = 'auto';
    ta.style.height = Math.min(ta.scrollHeight + 2, 200) + 'px';
    ta.style.overflowY = ta.scrollHeight > 200 ? 'auto' : 'hidden';
  }

  /** The @word being typed just before the caret, if any. */
  function mentionAtCaret(ta) {
    const before = ta.value.slice(0, ta.selectionStart);
    const m = /(^|\s)(@[a-z0-9._=\-/:]*)$/i.exec(before);
    return m ? { start: before.length - m[2].length, word: m[2].slice(1).toLowerCase() } : null;
  }

  function onComposerInput(ev) {
    const ta = ev.target;
    autosize(ta);
    sendTyping(Boolean(ta.value.trim()));
    const list = $('#complete');
    const at = mentionAtCaret(ta);
    if (!at) { list.hidden = true; return; }
    const matches = S.members.filter((m) => m.fqid !== S.me.fqid && m.membership === 'join' && (
      showId(m.fqid).slice(1).toLowerCase().startsWith(at.word)
      || String(m.display_name).toLowerCase().startsWith(at.word))).slice(0, 8);
    if (!matches.length) { list.hidden = true; return; }
    list.replaceChildren(...matches.map((m, i) => h('li', { role: 'option', class: 'option',
      'aria-selected': i === 0 ? 'true' : 'false', dataset: { id: showId(m.fqid) },
      onmousedown: (e2) => { e2.preventDefault(); complete(showId(m.fqid)); } },
    h('strong', {}, txt(showId(m.fqid))), ' ', h('span', { class: 'muted' }, txt(m.display_name)),
    m.foreign ? h('span', { class: 'tag foreign' }, ' 🌐 ', txt(serverOf(m.fqid))) : null)));
    list.hidden = false;
  }

  function complete(id) {
    const ta = $('#composer-input');
    const at = mentionAtCaret(ta);
    if (!at) return;
    const after = ta.value.slice(ta.selectionStart);
    ta.value = ta.value.slice(0, at.start) + id + ' ' + after;
    const caret = at.start + id.length + 1;
    ta.setSelectionRange(caret, caret);
    $('#complete').hidden = true;
    ta.focus();
  }

  function onComposerKey(ev) {
    const list = $('#complete');
    if (!list.hidden) {
      const opts = [...list.children];
      const cur = opts.findIndex((o) => o.getAttribute('aria-selected') === 'true');
      if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
        ev.preventDefault();
        const nxt = (cur + (ev.key === 'ArrowDown' ? 1 : opts.length - 1)) % opts.length;
        opts.forEach((o, i) => o.setAttribute('aria-selected', i === nxt ? 'true' : 'false'));
        return;
      }
      if (ev.key === 'Enter' || ev.key === 'Tab') {
        ev.preventDefault();
        complete(opts[Math.max(cur, 0)].dataset.id);
        return;
      }
      if (ev.key === 'Escape') { ev.preventDefault(); list.hidden = true; return; }
    }
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      send();
    } else if (ev.key === 'Escape' && S.editing) {
      cancelEdit();
    } else if (ev.key === 'Escape' && S.replyTo) {
      clearReply();
    } else if (ev.key === 'ArrowUp' && !ev.currentTarget.value && !S.editing) {
      const last = lastOwnMessage();
      if (last) { ev.preventDefault(); startEdit(last); }
    }
  }

  // ---------------------------------------------------------------- members

  async function loadMembers() {
    const room = S.current;
    try {
      const data = await api('GET', `/v1/rooms/${enc(room)}/members`);
      if (room !== S.current) return;
      S.members = data.data;
    } catch (e) { return; }
    renderMembers();
    renderTimeline();
  }

  function toggleMembers() {
    const panel = $('#members');
    panel.hidden = !panel.hidden;
    const b = $('#members-toggle');
    if (b) b.setAttribute('aria-expanded', String(!panel.hidden));
    renderMembers();
    if (!panel.hidden) panel.querySelector('button, li')?.focus?.();
  }

  function renderMembers() {
    const panel = $('#members');
    if (!panel || panel.hidden) return;
    const sorted = [...S.members].sort((a, b) => (a.foreign - b.foreign) || a.id.localeCompare(b.id));
    panel.replaceChildren(
      h('div', { class: 'panel-head' }, h('h2', {}, 'Members (', String(S.members.filter((m) => m.membership === 'join').length), ')'),
        h('button', { class: 'icon', 'aria-label': 'Close members', onclick: toggleMembers }, '✕')),
      h('ul', { id: 'member-list' }, sorted.map((m) => h('li', {
        class: cls('member', m.foreign && 'is-foreign', m.membership !== 'join' && 'invited'),
        dataset: { fqid: m.fqid, id: m.id } },
      h('span', { class: 'name' }, txt(m.display_name)),
      h('span', { class: 'member-id' }, txt(m.id)),
      m.foreign ? h('span', { class: 'tag foreign', title: 'member of another server' }, '🌐 foreign · ', txt(serverOf(m.fqid))) : null,
      m.membership !== 'join' ? h('span', { class: 'tag' }, txt(m.membership === 'invite' ? 'invited' : m.membership)) : null))));
  }

  // ------------------------------------------------------------------ stream

  function closeStream() {
    if (S.es) { S.es.close(); S.es = null; }
    clearTimeout(S.reconnectTimer);
  }

  function connectStream() {
    closeStream();
    const url = S.lastStreamId ? '/v1/me/stream?since=' + enc(S.lastStreamId) : '/v1/me/stream';
    const es = new EventSource(url, { withCredentials: true });
    S.es = es;
    return new Promise((resolve) => {
      es.onopen = () => {
        const wasDown = S.everLive && !S.live;
        S.live = true;
        S.everLive = true;
        S.retryMs = 1000;
        setConn('live');
        resolve();
        if (wasDown) resync();
      };
      es.onerror = () => {
        S.live = false;
        setConn('reconnecting');
        resolve();
        if (es.readyState === EventSource.CLOSED) {
          // the browser gave up (e.g. the server answered an error): try again ourselves
          S.reconnectTimer = setTimeout(async () => {
            try { await api('GET', '/v1/me'); } catch (e) { if (e.status === 401) return; }
            if (S.me) connectStream();
          }, S.retryMs);
          S.retryMs = Math.min(S.retryMs * 2, 30000);
        }
      };
      const track = (m) => { if (m.lastEventId) S.lastStreamId = m.lastEventId; };
      es.addEventListener('event', (m) => { track(m); onStreamEvent(JSON.parse(m.data)); });
      es.addEventListener('notification', (m) => { track(m); onNotification(JSON.parse(m.data)); });
      es.addEventListener('read', (m) => { track(m); onRead(JSON.parse(m.data)); });
      es.addEventListener('typing', (m) => onTyping(JSON.parse(m.data)));
    });
  }

  async function resync() {
    try {
      await Promise.all([loadRooms(), loadNotifications()]);
      if (S.view === 'room' && S.current) {
        const page = await api('GET', `/v1/rooms/${enc(S.current)}/messages?limit=50`);
        for (const e of page.data) upsertEvent(e);
        renderTimeline();
        loadMembers();
      }
    } catch (e) { /* next reconnect tries again */ }
  }

  function onStreamEvent(e) {
    if (e.status === 'refused' && e.sender !== S.me.fqid) {
      // the host refused someone else's pending event: it leaves the timeline
      if (S.events.delete(e.event_id) && e.room_id === S.current) renderTimeline();
      return;
    }
    const entry = S.rooms.get(e.room_id);
    if (!entry || e.type === 'member' || e.type === 'invite') {
      loadRooms().catch(() => {});
    }
    const c = e.content || {};
    if (entry && e.type === 'message' && e.sender !== S.me.fqid && !c.deleted && !c.edited_at
        && e.status !== 'refused' && !S.notified.has(e.event_id)) {
      // a new message of someone else's: the room moves up; a mention or a DM while
      // I look elsewhere counts in the title and on the desktop
      S.notified.add(e.event_id);
      entry.room.last_activity = Math.max(entry.room.last_activity || 0, e.origin_ts || 0);
      const away = e.room_id !== S.current || document.visibilityState === 'hidden';
      if (away && Array.isArray(c.mentions) && c.mentions.includes(S.me.fqid)) {
        entry.mentions = (entry.mentions || 0) + 1;
      }
      if (away && e.room_id === S.current && entry.room.type === 'dm') entry.unread = (entry.unread || 0) + 1;
      if (away) desktopNotify(e, entry);
      renderRooms();
    }
    if (e.room_id === S.current && S.view === 'room') {
      const isNew = !S.events.has(e.event_id);
      upsertEvent(e);
      renderTimeline();
      if (isNew && e.type === 'message' && e.sender !== S.me.fqid) {
        $('#announce').textContent = nameOf(e.sender) + ': ' + String((e.content || {}).body ?? '').slice(0, 200);
      }
      if (e.type === 'member' || e.type === 'invite') loadMembers();
      if (document.visibilityState === 'visible') {
        const tl = $('#timeline');
        if (tl.scrollHeight - tl.scrollTop - tl.clientHeight < 60) markRead();
      }
    } else if (entry && e.type === 'message' && e.sender !== S.me.fqid) {
      // a changed event (same event_id, new status) is not a new unread message
      const read = entry.room.read_seq || 0;
      if (!(e.content || {}).deleted && !(e.content || {}).edited_at
          && (e.seq || Infinity) > read && !S.counted.has(e.event_id)) {
        S.counted.add(e.event_id);
        entry.unread += 1;
        renderRooms();
      }
    }
  }

  // ----------------------------------------------------------- notifications

  async function loadNotifications() {
    const data = await api('GET', '/v1/me/notifications?limit=100');
    S.notifications = data.data;
    renderBell();
  }

  function onNotification(n) {
    const at = S.notifications.findIndex((x) => x.notification_id === n.notification_id);
    if (at >= 0) {
      // again, once seen (here or on another device): only the bell changes
      S.notifications[at] = n;
      renderBell();
      return;
    }
    S.notifications.unshift(n);
    renderBell();
    if ($('#dialog').open && $('#dialog').dataset.kind === 'notifications') renderNotifications();
  }

  function unseenCount() {
    return S.notifications.filter((n) => !n.seen).length;
  }

  function renderBell() {
    const count = $('#bell-count');
    if (!count) return;
    const n = unseenCount();
    count.hidden = n === 0;
    count.textContent = String(n);
    $('#bell').setAttribute('aria-label', n ? `Notifications (${n} new)` : 'Notifications');
  }

  function showNotifications() {
    openDialog('Notifications', h('ul', { id: 'notification-list', class: 'notifications' }), 'notifications');
    renderNotifications();
    // seen on the server: every device of mine agrees
    if (S.notifications.some((n) => !n.seen)) {
      for (const n of S.notifications) n.seen = true;
      api('POST', '/v1/me/notifications/seen', {}).catch(() => {});
    }
    renderBell();
  }

  function renderNotifications() {
    const list = $('#notification-list');
    if (!list) return;
    const answered = store.get('answered', {});
    list.replaceChildren(...S.notifications.map((n) => {
      const from = h('strong', {}, txt(showId(n.from || '')));
      const when = h('time', { class: 'muted' }, fmtTime(n.created_at));
      if (n.type === 'invite') {
        const joined = S.rooms.has(n.room_id);
        const state = joined ? 'joined' : answered[n.invite_id];
        const msg = h('p', { class: 'error', role: 'alert' });
        return h('li', { class: 'notification', dataset: { type: 'invite', roomId: n.room_id || '', inviteId: n.invite_id || '' } },
          h('div', {}, '✉ ', from, ' invited you to a room on ', txt(serverOf(n.room_id || '')),
            !isLocal(n.from || '') ? ' 🌐' : '', ' ', when),
          state ? h('div', { class: 'muted' }, state === 'joined' ? 'accepted' : txt(state),
            joined ? h('button', { class: 'link', onclick: () => { closeDialog(); openRoom(n.room_id); } }, 'open') : null)
            : h('div', { class: 'buttons' },
              h('button', { class: 'primary accept', onclick: () => answerInvite(n, true, msg) }, 'Accept'),
              h('button', { class: 'decline', onclick: () => answerInvite(n, false, msg) }, 'Decline')),
          msg);
      }
      if (n.type === 'mention') {
        return h('li', { class: 'notification', dataset: { type: 'mention', roomId: n.room_id || '', eventId: n.event_id || '' } },
          h('button', { class: 'link jump', onclick: () => { closeDialog(); openRoom(n.room_id, n.event_id); } },
            '@ ', from, ' mentioned you', S.rooms.has(n.room_id) ? [' in ', txt(roomLabel(S.rooms.get(n.room_id).room))] : ''),
          ' ', when);
      }
      return h('li', { class: 'notification', dataset: { type: String(n.type) } },
        txt(String(n.type)), n.from ? [' from ', from] : '', n.room_id ? [' · ', txt(n.room_id)] : '', ' ', when,
        n.error ? h('div', { class: 'error' }, txt((n.error.code || '') + ' ' + (n.error.message || ''))) : null);
    }));
    if (!S.notifications.length) list.append(h('li', { class: 'muted' }, 'Nothing yet.'));
  }

  async function answerInvite(n, accept, msg) {
    try {
      const r = await api('POST', `/v1/me/invites/${enc(n.invite_id)}/${accept ? 'accept' : 'decline'}?room_id=${enc(n.room_id)}`);
      const answered = store.get('answered', {});
      answered[n.invite_id] = accept ? 'accepted' : 'declined';
      store.set('answered', answered);
      if (accept) {
        closeDialog();
        await loadRooms();
        if (S.rooms.has(r.room_id)) await openRoom(r.room_id);
        else toast('Accepted: the room appears when its host confirms.');
      } else {
        renderNotifications();
      }
    } catch (e) {
      if (e.code === 'SW_INVITE_NOT_PENDING') {
        const answered = store.get('answered', {});
        answered[n.invite_id] = 'already answered';
        store.set('answered', answered);
        renderNotifications();
      } else {
        msg.textContent = errText(e);
      }
    }
  }

  // ---------------------------------------------------------------- dialogs

  function openDialog(title, body, kind) {
    const dlg = $('#dialog');
    $('#dialog-title').textContent = title;
    $('#dialog-body').replaceChildren(body);
    dlg.dataset.kind = kind || '';
    if (!dlg.open) dlg.showModal();
    const first = body.querySelector('input, select, textarea, button');
    if (first) first.focus();
  }

  function closeDialog() {
    const dlg = $('#dialog');
    if (dlg.open) dlg.close();
  }

  function formDialog(title, kind, fields, submitText, onSubmit) {
    const msg = h('p', { class: 'error', role: 'alert' });
    const button = h('button', { type: 'submit', class: 'primary' }, submitText);
    const form = h('form', { class: 'stack', id: kind + '-form', onsubmit: async (ev) => {
      ev.preventDefault();
      button.disabled = true;
      msg.textContent = '';
      try {
        await onSubmit();
      } catch (e) {
        msg.textContent = errText(e);
      } finally {
        button.disabled = false;
      }
    } }, fields, button, msg);
    openDialog(title, form, kind);
  }

  function newRoomDialog() {
    const name = h('input', { id: 'new-room-name', required: true, maxlength: 200 });
    const type = h('select', { id: 'new-room-type' },
      ['standard', 'dm', 'incognito', 'bridge', 'sidekick'].map((t) => h('option', { value: t }, t)));
    const federate = h('input', { id: 'new-room-federate', type: 'checkbox' });
    formDialog('New room', 'new-room', [
      h('label', { for: 'new-room-name' }, 'Name'), name,
      h('label', { for: 'new-room-type' }, 'Type'), type,
      h('label', { class: 'check' }, federate, ' Federate: people of other servers may join (both servers must allow it)'),
    ], 'Create', async () => {
      const room = await api('POST', '/v1/rooms', { name: name.value, type: type.value, federate: federate.checked });
      closeDialog();
      await loadRooms();
      await openRoom(room.room_id);
    });
  }

  function newDmDialog() {
    const who = h('input', { id: 'new-dm-fqid', required: true, placeholder: '@bob:other.example or @carol',
      autocapitalize: 'none', spellcheck: 'false' });
    formDialog('New direct message', 'new-dm', [
      h('label', { for: 'new-dm-fqid' }, 'Who'), who,
      h('p', { class: 'hint' }, 'Someone on another server is @name:server; they get an invite.'),
    ], 'Start', async () => {
      const fqid = qualify(who.value, S.me.server_name);
      let roomId;
      if (serverOf(fqid) !== S.me.server_name) {
        roomId = (await api('POST', '/v1/me/federated-dms', { fqid })).room_id;
      } else {
        const room = await api('POST', '/v1/rooms', { name: `${S.me.id} & ${showId(fqid)}`, type: 'dm' });
        roomId = room.room_id;
        await api('POST', `/v1/rooms/${enc(roomId)}/invites`, { fqid });
      }
      closeDialog();
      await loadRooms();
      await openRoom(roomId);
    });
  }

  function inviteDialog() {
    const who = h('input', { id: 'invite-fqid', required: true, placeholder: '@bob:other.example or @carol',
      autocapitalize: 'none', spellcheck: 'false' });
    formDialog('Invite to this room', 'invite', [h('label', { for: 'invite-fqid' }, 'Who'), who], 'Invite', async () => {
      await api('POST', `/v1/rooms/${enc(S.current)}/invites`, { fqid: qualify(who.value, S.me.server_name) });
      closeDialog();
      toast('Invited ' + showId(qualify(who.value, S.me.server_name)) + '.');
      loadMembers();
    });
  }

  async function startCall() {
    const button = $('#call-button');
    button.disabled = true;
    try {
      const call = await api('POST', `/v1/rooms/${enc(S.current)}/call`);
      const copy = (label, value) => h('button', { type: 'button', onclick: async () => {
        try { await navigator.clipboard.writeText(value); toast(label + ' copied.'); } catch (e) { toast('Copy failed: select and copy by hand.'); }
      } }, 'Copy ' + label);
      openDialog('Call', h('div', { class: 'stack', id: 'call-info' },
        h('p', {}, 'A call token for this room, valid until ', txt(call.expires_at), ', on the LiveKit server of ',
          txt(call.host), '.'),
        h('label', {}, 'LiveKit server'), h('input', { readonly: true, value: call.livekit_url }),
        h('label', {}, 'Room'), h('input', { readonly: true, value: call.livekit_room }),
        h('label', {}, 'Token'), h('input', { readonly: true, value: call.token, id: 'call-token' }),
        h('div', { class: 'buttons' }, copy('server URL', call.livekit_url), copy('token', call.token)),
        h('p', { class: 'hint' }, 'Join with any LiveKit client (e.g. LiveKit Meet\'s custom server page) using this server URL and token.')), 'call');
    } catch (e) {
      toast(e.code === 'SW_CALLS_NOT_CONFIGURED' ? 'Calls are not set up for this room: ' + e.message : 'No call: ' + errText(e));
    } finally {
      button.disabled = false;
    }
  }

  let toastTimer = null;
  function toast(text) {
    let el = $('#toast');
    if (!el) { el = h('div', { id: 'toast', role: 'status' }); document.body.append(el); }
    el.textContent = text;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.hidden = true; }, 6000);
  }

  // ----------------------------------------------------------------- search

  async function runSearch() {
    const q = $('#search').value.trim();
    if (!q) return;
    const list = h('ul', { id: 'search-results', class: 'results' }, h('li', { class: 'muted' }, 'Searching…'));
    openDialog('Search: ' + q, list, 'search');
    try {
      const data = await api('GET', '/v1/search?q=' + enc(q));
      list.replaceChildren(...data.data.map((e) => h('li', {},
        h('button', { class: 'result', dataset: { eventId: e.event_id }, onclick: () => { closeDialog(); openRoom(e.room_id, e.event_id); } },
          h('div', { class: 'muted' }, txt(S.rooms.has(e.room_id) ? roomLabel(S.rooms.get(e.room_id).room) : e.room_id), ' · ',
            txt(showId(e.sender)), ' · ', fmtTime(e.origin_ts)),
          h('div', { dir: 'auto' }, txt((e.content || {}).body))))));
      if (!data.data.length) list.append(h('li', { class: 'muted' }, 'No message matches.'));
    } catch (e) {
      list.replaceChildren(h('li', { class: 'error' }, errText(e)));
    }
  }

  // ------------------------------------------------------------------ admin

  function showAdmin(tab) {
    S.view = 'admin';
    document.body.classList.add('in-room');
    renderRooms();
    const tabs = [['peers', 'Peers'], ['policy', 'Policy'], ['rejected', 'Rejected events'], ['doctor', 'Doctor']];
    const body = h('div', { id: 'admin-body', class: 'admin-body' });
    $('#main').replaceChildren(
      h('header', { class: 'room-head' },
        h('button', { class: 'icon back', 'aria-label': 'Back to rooms', onclick: () => document.body.classList.remove('in-room') }, '←'),
        h('div', { class: 'title' }, h('h1', {}, 'Federation admin'), h('span', { class: 'muted meta' }, S.me.server_name))),
      h('div', { class: 'tabs', role: 'tablist' }, tabs.map(([id, label]) => h('button', { role: 'tab', id: 'tab-' + id,
        'aria-selected': String(id === tab), onclick: () => showAdmin(id) }, label))),
      body);
    ({ peers: adminPeers, policy: adminPolicy, rejected: adminRejected, doctor: adminDoctor })[tab](body);
  }

  const when = (iso) => (iso ? new Date(iso).toLocaleString() : '—');

  let peersLoads = 0;
  async function adminPeers(body) {
    body.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    let data;
    try { data = await api('GET', '/v1/admin/federation/peers'); } catch (e) {
      body.replaceChildren(h('p', { class: 'error' }, errText(e))); return;
    }
    const rows = data.data.map((p) => h('tr', { dataset: { peer: p.server_name }, class: p.last_error ? 'has-error' : null },
      h('th', { scope: 'row' }, txt(p.server_name)),
      h('td', {}, when(p.last_seen)),
      h('td', { class: 'last-error' }, p.last_error ? txt(p.last_error) : '—'),
      h('td', {}, String(p.queue_depth), p.oldest_queued_at ? [h('br'), h('span', { class: 'muted' }, 'oldest ', when(p.oldest_queued_at))] : ''),
      h('td', {}, when(p.next_retry_at)),
      h('td', {}, `${p.events_sent_24h} / ${p.events_received_24h}`),
      h('td', { class: 'buttons' },
        h('button', { class: 'retry', onclick: async (ev) => {
          ev.currentTarget.disabled = true;
          try { await api('POST', `/v1/admin/federation/peers/${enc(p.server_name)}/retry`); toast('Retrying ' + p.server_name + ' now.'); } catch (e) { toast(errText(e)); }
          adminPeers(body);
        } }, 'Retry now'),
        h('button', { class: 'doctor', onclick: () => { showAdmin('doctor'); runDoctor(p.server_name); } }, 'Doctor'))));
    body.replaceChildren(
      h('div', { class: 'bar' }, h('button', { id: 'peers-refresh', onclick: () => adminPeers(body) }, 'Refresh')),
      rows.length ? h('div', { class: 'table-wrap' }, h('table', { id: 'peers-table', dataset: { loads: String(++peersLoads) } },
        h('thead', {}, h('tr', {}, ['Peer', 'Last seen', 'Last error', 'Queue', 'Next retry', 'Sent / received (24 h)', ''].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, rows)))
        : h('p', { class: 'muted' }, 'No peer yet: this server has not talked to another one.'));
  }

  async function adminPolicy(body) {
    let p;
    try { p = await api('GET', '/v1/admin/federation/policy'); } catch (e) {
      body.replaceChildren(h('p', { class: 'error' }, errText(e))); return;
    }
    const mode = h('select', { id: 'policy-mode' }, ['open', 'invite_only', 'closed'].map((m) => h('option', { value: m, selected: p.default_mode === m }, m)));
    const allowed = h('textarea', { id: 'policy-allowed', rows: 4, value: (p.allowed_peers || []).join('\n') });
    const denied = h('textarea', { id: 'policy-denied', rows: 3, value: (p.denied_peers || []).join('\n') });
    const maxForeign = h('input', { id: 'policy-max-foreign', type: 'number', min: 0, value: String(p.max_foreign_participants_per_room) });
    const maxBackfill = h('input', { id: 'policy-max-backfill', type: 'number', min: 0, value: String(p.max_backfill_events_per_request) });
    const enabled = h('input', { id: 'policy-enabled', type: 'checkbox', checked: !!p.federation_enabled });
    const msg = h('p', { role: 'status', id: 'policy-msg' });
    const lines = (ta) => ta.value.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
    body.replaceChildren(h('form', { class: 'stack policy', onsubmit: async (ev) => {
      ev.preventDefault();
      msg.className = '';
      try {
        await api('PUT', '/v1/admin/federation/policy', {
          default_mode: mode.value, allowed_peers: lines(allowed), denied_peers: lines(denied),
          max_foreign_participants_per_room: Number(maxForeign.value),
          max_backfill_events_per_request: Number(maxBackfill.value), federation_enabled: enabled.checked });
        msg.textContent = 'Saved.';
      } catch (e) { msg.className = 'error'; msg.textContent = errText(e); }
    } },
    h('label', { for: 'policy-mode' }, 'Default mode'), mode,
    h('p', { class: 'hint' }, 'open: any peer; invite_only: only the allowed peers; closed: none.'),
    h('label', { for: 'policy-allowed' }, 'Allowed peers (one per line)'), allowed,
    h('label', { for: 'policy-denied' }, 'Denied peers (one per line)'), denied,
    h('label', { for: 'policy-max-foreign' }, 'Max foreign participants per room'), maxForeign,
    h('label', { for: 'policy-max-backfill' }, 'Max backfill events per request'), maxBackfill,
    h('label', { class: 'check' }, enabled, ' Federation enabled for this server'),
    h('button', { type: 'submit', class: 'primary', id: 'policy-save' }, 'Save policy'), msg));
  }

  async function adminRejected(body, before, tbody) {
    let data;
    try { data = await api('GET', '/v1/admin/federation/rejected?limit=50' + (before ? '&before=' + enc(before) : '')); } catch (e) {
      body.replaceChildren(h('p', { class: 'error' }, errText(e))); return;
    }
    const rows = data.data.map((r) => h('tr', {},
      h('td', {}, when(r.created_at)), h('td', {}, txt(r.peer)), h('td', {}, h('code', {}, txt(r.reason))),
      h('td', {}, txt(r.message)), h('td', { class: 'muted' }, txt(r.event_id || ''))));
    if (!tbody) {
      tbody = h('tbody', {});
      body.replaceChildren(data.data.length ? h('div', { class: 'table-wrap' }, h('table', { id: 'rejected-table' },
        h('thead', {}, h('tr', {}, ['When', 'Peer', 'Reason', 'Message', 'Event'].map((t) => h('th', { scope: 'col' }, t)))), tbody))
        : h('p', { class: 'muted' }, 'No rejected events.'));
    }
    tbody.append(...rows);
    $('#rejected-more')?.remove();
    if (data.next) body.append(h('button', { id: 'rejected-more', onclick: () => adminRejected(body, data.next, tbody) }, 'Older'));
  }

  function adminDoctor(body) {
    const peer = h('input', { id: 'doctor-peer', required: true, placeholder: 'peer.example.com', autocapitalize: 'none', spellcheck: 'false' });
    body.replaceChildren(
      h('form', { class: 'inline', onsubmit: (ev) => { ev.preventDefault(); runDoctor(peer.value.trim()); } },
        h('label', { for: 'doctor-peer' }, 'Peer server'), peer,
        h('button', { type: 'submit', class: 'primary', id: 'doctor-run' }, 'Run doctor')),
      h('p', { class: 'hint' }, 'The same checks as ', h('code', {}, 'swfed doctor PEER'), ': it only reads, and says what to fix.'),
      h('div', { id: 'doctor-result' }));
  }

  async function runDoctor(name) {
    const peer = $('#doctor-peer');
    if (peer) peer.value = name;
    const out = $('#doctor-result');
    if (!out || !name) return;
    out.replaceChildren(h('p', { class: 'muted' }, 'Running the checks against ', txt(name), '…'));
    try {
      const r = await api('POST', `/v1/admin/federation/peers/${enc(name)}/doctor`);
      const problems = r.checks.filter((c) => c.status === 'problem').length;
      out.replaceChildren(
        h('p', { id: 'doctor-summary', class: problems ? 'error' : 'ok' },
          problems ? `${problems} problem(s) found with ${r.peer}` : `No problem found with ${r.peer}.`),
        h('ol', { class: 'checks' }, r.checks.map((c) => h('li', { class: 'doctor-check st-' + c.status, dataset: { name: c.name, status: c.status } },
          h('span', { class: 'badge' }, c.status), ' ', h('strong', {}, c.name), ' ', txt(c.detail),
          c.fix ? h('div', { class: 'fix' }, 'Fix: ', txt(c.fix)) : null))));
    } catch (e) {
      out.replaceChildren(h('p', { class: 'error' }, errText(e)));
    }
  }

  // -------------------------------------------------------------- keyboard

  document.addEventListener('keydown', (ev) => {
    if (!S.me) return;
    if ((ev.ctrlKey || ev.metaKey) && ev.key.toLowerCase() === 'k') {
      ev.preventDefault();
      $('#search')?.focus();
    } else if (ev.altKey && (ev.key === 'ArrowUp' || ev.key === 'ArrowDown')) {
      const ids = [...document.querySelectorAll('.room-item')].map((b) => b.dataset.roomId);
      if (!ids.length) return;
      ev.preventDefault();
      const i = ids.indexOf(S.current);
      openRoom(ids[(i + (ev.key === 'ArrowDown' ? 1 : ids.length - 1) + (i < 0 ? 1 : 0)) % ids.length]);
    } else if (ev.key === 'Escape') {
      $('.picker')?.remove();
    }
  });

  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && S.view === 'room') markRead();
  });

  // ------------------------------------------------------------------ start

  async function start() {
    try {
      S.me = await api('GET', '/v1/me');
    } catch (e) {
      if (e.status === 401) { showLogin(); return; }
      $('#app').replaceChildren(h('p', { class: 'error' }, 'Cannot load: ', errText(e)));
      return;
    }
    S.rooms = new Map();
    S.current = null;
    S.view = 'none';
    S.lastStreamId = null;
    S.everLive = false;
    buildShell();
    setConn('connecting');
    // The stream first, so nothing that happens while the rest loads is missed.
    await Promise.race([connectStream(), new Promise((r) => setTimeout(r, 5000))]);
    await Promise.all([loadRooms(), loadNotifications()]);
    document.getElementById('app').dataset.ready = 'true';
  }

  start();
})();
