// VLM Playground: the little that htmx cannot do.
// - the image picker: drop zone, file picker, paste from the clipboard, thumbnails with remove buttons
//   (the chosen files live in a DataTransfer and are put on the form's file input, so htmx sends them);
// - streamed answer text, appended as text (textContent / Text nodes), never parsed as HTML;
// - elapsed seconds on "loading" lines; JSON error bodies shown as text next to the form.
// No eval, no inline handlers, no innerHTML: untrusted strings only ever reach the page as text.
(function () {
  "use strict";

  // ------------------------------------------------------------------ the image picker

  var picked = new DataTransfer();
  var pasteCount = 0;
  var previews = new Map(); // File -> object URL

  function fileInput() { return document.getElementById("images"); }

  function sameFile(a, b) {
    return a.name === b.name && a.size === b.size && a.lastModified === b.lastModified && a.type === b.type;
  }

  function sync() {
    var input = fileInput();
    if (input) { input.files = picked.files; }
    renderThumbs();
  }

  function addFiles(files) {
    for (var i = 0; i < files.length; i++) {
      var file = files[i];
      var known = false;
      for (var j = 0; j < picked.files.length; j++) {
        if (sameFile(picked.files[j], file)) { known = true; break; }
      }
      if (!known) { picked.items.add(file); }
    }
    sync();
  }

  function removeFile(index) {
    var next = new DataTransfer();
    for (var i = 0; i < picked.files.length; i++) {
      if (i !== index) { next.items.add(picked.files[i]); }
    }
    picked = next;
    sync();
  }

  function previewUrl(file) {
    if (!previews.has(file)) { previews.set(file, URL.createObjectURL(file)); }
    return previews.get(file);
  }

  function renderThumbs() {
    var list = document.getElementById("thumbs");
    if (!list) { return; }
    var keep = new Set();
    list.replaceChildren();
    for (var i = 0; i < picked.files.length; i++) {
      var file = picked.files[i];
      keep.add(file);
      var item = document.createElement("li");
      item.className = "thumb-item";
      var img = document.createElement("img");
      img.className = "thumb";
      img.alt = file.name;
      img.src = previewUrl(file);
      var name = document.createElement("span");
      name.className = "img-name";
      name.textContent = file.name;
      name.title = file.name + " (" + Math.round(file.size / 1024) + " KB)";
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "remove";
      remove.dataset.index = String(i);
      remove.setAttribute("aria-label", "remove " + file.name);
      remove.textContent = "×";
      item.append(img, name, remove);
      list.append(item);
    }
    previews.forEach(function (url, file) {
      if (!keep.has(file)) { URL.revokeObjectURL(url); previews.delete(file); }
    });
    var zone = document.getElementById("dropzone");
    if (zone) { zone.classList.toggle("has-files", picked.files.length > 0); }
  }

  document.addEventListener("change", function (event) {
    var input = event.target;
    if (input && input.id === "images") {
      var chosen = Array.prototype.slice.call(input.files || []);
      addFiles(chosen); // the picker adds to the selection; sync() puts the whole selection back
    }
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("#thumbs button.remove") : null;
    if (button) {
      event.preventDefault();
      removeFile(Number(button.dataset.index));
    }
  });

  function zoneOf(event) {
    return event.target && event.target.closest ? event.target.closest("#dropzone") : null;
  }

  ["dragenter", "dragover"].forEach(function (type) {
    document.addEventListener(type, function (event) {
      var zone = zoneOf(event);
      if (zone) { event.preventDefault(); zone.classList.add("dragging"); }
    });
  });
  ["dragleave", "drop"].forEach(function (type) {
    document.addEventListener(type, function (event) {
      var zone = zoneOf(event);
      if (!zone) { return; }
      if (type === "dragleave" && zone.contains(event.relatedTarget)) { return; }
      zone.classList.remove("dragging");
      if (type === "drop") {
        event.preventDefault();
        if (event.dataTransfer && event.dataTransfer.files) { addFiles(event.dataTransfer.files); }
      }
    });
  });

  document.addEventListener("paste", function (event) {
    if (!fileInput() || !event.clipboardData) { return; }
    var files = [];
    var items = event.clipboardData.items || [];
    for (var i = 0; i < items.length; i++) {
      if (items[i].kind === "file" && items[i].type.indexOf("image/") === 0) {
        var blob = items[i].getAsFile();
        if (blob) {
          pasteCount += 1;
          var ext = (items[i].type.split("/")[1] || "png").replace(/[^a-z0-9]/g, "");
          files.push(new File([blob], "pasted-" + pasteCount + "." + ext, { type: blob.type, lastModified: Date.now() }));
        }
      }
    }
    if (files.length) { event.preventDefault(); addFiles(files); }
  });

  // After a history restore or a fresh page, the input may hold files the browser kept.
  document.addEventListener("DOMContentLoaded", function () {
    var input = fileInput();
    if (input && input.files && input.files.length) { addFiles(input.files); }
  });

  // ------------------------------------------------------------------ streamed panels

  // A panel's state changed (loading, generating, done): the pool summary and picker states follow soon.
  var poolTimer = null;
  function poolChanged() {
    if (poolTimer !== null || typeof htmx === "undefined") { return; }
    poolTimer = window.setTimeout(function () {
      poolTimer = null;
      htmx.trigger(document.body, "pool-changed");
    }, 250);
  }

  function nearBottom(el) { return el.scrollHeight - el.scrollTop - el.clientHeight < 24; }

  document.addEventListener("htmx:sseBeforeMessage", function (event) {
    var target = event.target;
    var message = event.detail;
    if (target.dataset && target.dataset.stream === "text") {
      event.preventDefault(); // never swapped as HTML
      var change;
      try { change = JSON.parse(message.data); } catch (e) { return; }
      var follow = nearBottom(target);
      if (typeof change.set === "string") {
        target.textContent = change.set;
      } else if (typeof change.append === "string") {
        target.append(document.createTextNode(change.append));
      }
      if (follow) { target.scrollTop = target.scrollHeight; }
      return;
    }
    if (target.classList && target.classList.contains("state")) { poolChanged(); }
    // A finished footer (with a rating form that may be half typed) is not replaced by a replay.
    if (target.classList && target.classList.contains("foot") && target.querySelector(".final")) {
      event.preventDefault();
    }
  });

  // ------------------------------------------------------------------ elapsed seconds

  var firstSeen = new WeakMap();
  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-elapsed]").forEach(function (el) {
      if (!firstSeen.has(el)) { firstSeen.set(el, now); }
      var seconds = Number(el.dataset.elapsed) + (now - firstSeen.get(el)) / 1000;
      var out = el.querySelector(".tick");
      if (out) { out.textContent = Math.floor(seconds) + " s"; }
    });
  }
  window.setInterval(tick, 1000);

  // ------------------------------------------------------------------ errors that are not fragments

  function slotFor(elt, status) {
    var form = elt && elt.closest ? elt.closest("form") : null;
    if (form && form.id === "compare-form") {
      return document.getElementById(status === 413 ? "error-images" : "error-form");
    }
    if (form) {
      var slot = form.querySelector(".field-error");
      if (!slot) {
        slot = document.createElement("p");
        slot.className = "field-error";
        form.append(slot);
      }
      return slot;
    }
    return null;
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail.xhr;
    if (!xhr || xhr.status < 400) { return; }
    var type = xhr.getResponseHeader("Content-Type") || "";
    if (type.indexOf("application/json") === -1) { return; }
    event.detail.shouldSwap = false;
    var detail = "the server refused the request (" + xhr.status + ")";
    try {
      var body = JSON.parse(xhr.responseText);
      if (body && typeof body.detail === "string") { detail = body.detail; }
    } catch (e) { /* keep the generic message */ }
    var slot = slotFor(event.detail.requestConfig && event.detail.requestConfig.elt, xhr.status);
    if (slot) { slot.textContent = detail; }
  });

  document.addEventListener("htmx:sendError", function (event) {
    var slot = slotFor(event.detail.elt, 0);
    if (slot) { slot.textContent = "could not reach the server; try again"; }
  });
})();
