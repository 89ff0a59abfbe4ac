// swfed web client: files and images (issue 21). Loaded before app.js, which
// calls window.SwfedMedia.composer(...) once per room view and
// window.SwfedMedia.render(attachments) for each message.
//
// Rules (as in app.js): names and types people wrote reach the page as text
// nodes only; files are shown from /v1/media/{id} (same origin, the session
// cookie), images only for the inline types the server serves inline, with
// the width and height the sender's client measured, so nothing jumps when
// the bytes arrive. Uploads go by XMLHttpRequest for its progress events,
// and can be cancelled.
'use strict';

(() => {
  const INLINE = ['image/png', 'image/jpeg', 'image/gif', 'image/webp'];
  const MAX_SHOWN_W = 360;
  const MAX_SHOWN_H = 320;
  let limits = null;
  let current = null; // the sendFiles of the composer built last
  const dropZones = new WeakSet();

  function el(tag, props, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
      else if (k === 'class') e.className = v;
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      e.append(kid instanceof Node ? kid : String(kid));
    }
    return e;
  }

  function fmtSize(n) {
    if (n < 1024) return n + ' B';
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + ' KB';
    if (n < 1024 * 1024 * 1024) return (n / 1024 / 1024).toFixed(1) + ' MB';
    return (n / 1024 / 1024 / 1024).toFixed(2) + ' GB';
  }

  const mediaUrl = (id, name) => '/v1/media/' + encodeURIComponent(id)
    + (name ? '?name=' + encodeURIComponent(name) : '');

  async function getLimits() {
    if (limits) return limits;
    try {
      const r = await fetch('/v1/media/limits', { credentials: 'same-origin', cache: 'no-store' });
      if (r.ok) limits = await r.json();
    } catch (e) { /* the server says so at upload */ }
    return limits || {};
  }

  /** Width and height of an image file, read here before it is sent (no blob: URL). */
  async function dimensions(file) {
    if (!INLINE.includes(file.type) || typeof createImageBitmap !== 'function') return null;
    try {
      const bmp = await createImageBitmap(file);
      const out = { width: bmp.width, height: bmp.height };
      bmp.close();
      return out.width > 0 && out.height > 0 ? out : null;
    } catch (e) {
      return null; // not an image after all: sent as a file
    }
  }

  function upload(file, onProgress) {
    const xhr = new XMLHttpRequest();
    const done = new Promise((resolve, reject) => {
      xhr.open('POST', '/v1/media');
      xhr.setRequestHeader('X-SWFed-CSRF', '1');
      xhr.setRequestHeader('Content-Type', file.type || 'application/octet-stream');
      xhr.upload.onprogress = (ev) => { if (ev.lengthComputable) onProgress(ev.loaded, ev.total); };
      xhr.onload = () => {
        let data = null;
        try { data = JSON.parse(xhr.responseText); } catch (e) { data = null; }
        if (xhr.status >= 200 && xhr.status < 300 && data) resolve(data);
        else {
          const err = (data && data.error) || {};
          reject(new Error((err.code ? err.code + ': ' : '') + (err.message || 'the server answered ' + xhr.status)));
        }
      };
      xhr.onerror = () => reject(new Error('the upload failed: the server cannot be reached'));
      xhr.onabort = () => reject(Object.assign(new Error('cancelled'), { cancelled: true }));
      xhr.send(file);
    });
    return { done, cancel: () => xhr.abort() };
  }

  async function postMessage(roomId, attachments) {
    const r = await fetch('/v1/rooms/' + encodeURIComponent(roomId) + '/messages', {
      method: 'POST', credentials: 'same-origin', cache: 'no-store',
      headers: { 'X-SWFed-CSRF': '1', 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ attachments }) });
    if (!r.ok) {
      let err = {};
      try { err = (await r.json()).error || {}; } catch (e) { err = {}; }
      throw new Error((err.code ? err.code + ': ' : '') + (err.message || 'the server answered ' + r.status));
    }
    return r.json();
  }

  /**
   * The composer's file controls: an attach button, paste and drag-and-drop on
   * ``dropZone``, a progress list with cancel. Each file, once uploaded, is
   * sent as a message of its own in the room ``currentRoom()`` names.
   */
  function composer({ form, dropZone, currentRoom, onError }) {
    const input = el('input', { type: 'file', id: 'attach-input', class: 'sr-only', multiple: true,
      tabindex: '-1', 'aria-hidden': 'true',
      onchange: () => { sendFiles([...input.files]); input.value = ''; } });
    const button = el('button', { type: 'button', id: 'attach', class: 'icon attach', title: 'Attach files',
      'aria-label': 'Attach files', onclick: () => input.click() }, '📎');
    const progress = el('ul', { id: 'uploads', class: 'uploads', 'aria-label': 'Uploads' });
    form.prepend(button, input);
    form.after(progress);

    async function sendFiles(files) {
      const roomId = currentRoom();
      if (!roomId || !files.length) return;
      const lim = await getLimits();
      for (const file of files) {
        if (lim.max_upload_bytes && file.size > lim.max_upload_bytes) {
          onError('Too large: ' + file.name + ' is ' + fmtSize(file.size) + '; files may be at most '
            + fmtSize(lim.max_upload_bytes) + '.');
          continue;
        }
        sendOne(roomId, file);
      }
    }

    async function sendOne(roomId, file) {
      const bar = el('progress', { max: '100', value: '0', 'aria-label': 'Uploading ' + file.name });
      let job = null;
      const cancel = el('button', { type: 'button', class: 'link cancel-upload', onclick: () => job && job.cancel() }, 'Cancel');
      const row = el('li', { class: 'upload' }, el('bdi', { class: 'name' }, file.name), ' ', bar, ' ', cancel);
      progress.append(row);
      try {
        const dims = await dimensions(file);
        job = upload(file, (loaded, total) => { bar.value = Math.round(100 * loaded / total); });
        const media = await job.done;
        const att = { media_id: media.media_id, name: file.name || 'file' };
        if (dims) Object.assign(att, dims);
        await postMessage(roomId, [att]);
        row.remove();
      } catch (e) {
        row.remove();
        if (!e.cancelled) onError('Not sent: ' + file.name + ': ' + e.message);
      }
    }

    // the room view is rebuilt per room, the drop zone is not: listen on it once,
    // and send to the composer built last
    current = sendFiles;
    if (!dropZones.has(dropZone)) {
      dropZones.add(dropZone);
      dropZone.addEventListener('dragover', (ev) => {
        if (ev.dataTransfer && [...ev.dataTransfer.types].includes('Files')) {
          ev.preventDefault();
          dropZone.classList.add('dropping');
        }
      });
      dropZone.addEventListener('dragleave', () => dropZone.classList.remove('dropping'));
      dropZone.addEventListener('drop', (ev) => {
        dropZone.classList.remove('dropping');
        if (ev.dataTransfer && ev.dataTransfer.files.length && current) {
          ev.preventDefault();
          current([...ev.dataTransfer.files]);
        }
      });
    }
    form.addEventListener('paste', (ev) => {
      const files = ev.clipboardData ? [...ev.clipboardData.files] : [];
      if (files.length) {
        ev.preventDefault();
        sendFiles(files);
      }
    });
    return { sendFiles };
  }

  /** Size an image is shown at, from the sender's measure: no jump when it loads. */
  function shownSize(a) {
    const scale = Math.min(1, MAX_SHOWN_W / a.width, MAX_SHOWN_H / a.height);
    return { width: Math.max(1, Math.round(a.width * scale)), height: Math.max(1, Math.round(a.height * scale)) };
  }

  function enlarge(a) {
    const dialog = el('dialog', { class: 'media-view', 'aria-label': a.name || 'image' });
    const img = el('img', { src: mediaUrl(a.media_id), alt: a.name || 'image' });
    dialog.append(el('form', { method: 'dialog' }, el('button', { class: 'icon', 'aria-label': 'Close' }, '✕')), img);
    dialog.addEventListener('close', () => dialog.remove());
    dialog.addEventListener('click', (ev) => { if (ev.target === dialog || ev.target === img) dialog.close(); });
    document.body.append(dialog);
    dialog.showModal();
  }

  function image(a) {
    const size = a.width && a.height ? shownSize(a) : null;
    const img = el('img', { class: 'media-image', alt: a.name || 'image', loading: 'lazy', decoding: 'async',
      width: size && size.width, height: size && size.height, 'data-media-id': a.media_id });
    let tries = 0;
    img.addEventListener('error', () => {
      // a peer's file may not be here yet (503): ask again a little later
      if (tries++ < 8) setTimeout(() => { img.src = mediaUrl(a.media_id) + '?try=' + tries; }, 1500 * tries);
    });
    img.src = mediaUrl(a.media_id);
    return el('button', { type: 'button', class: 'media-thumb', title: 'Enlarge ' + (a.name || 'image'),
      onclick: () => enlarge(a) }, img);
  }

  function card(a) {
    return el('div', { class: 'media-card', 'data-media-id': a.media_id },
      el('span', { class: 'media-icon', 'aria-hidden': 'true' }, '📄'),
      el('span', { class: 'media-meta' },
        el('bdi', { class: 'media-name' }, a.name || 'file'),
        el('span', { class: 'muted' }, ' ', el('bdi', {}, a.content_type || ''), ' · ', fmtSize(a.size || 0))),
      el('a', { class: 'media-download', href: mediaUrl(a.media_id, a.name), download: a.name || 'file',
        rel: 'noopener' }, 'Download'));
  }

  /** A message's attachments: inline images, a card for every other file. */
  function render(attachments) {
    if (!Array.isArray(attachments) || !attachments.length) return null;
    return el('div', { class: 'attachments' }, attachments.filter((a) => a && a.media_id)
      .map((a) => (INLINE.includes(a.content_type) ? image(a) : card(a))));
  }

  window.SwfedMedia = { composer, render, fmtSize };
})();
