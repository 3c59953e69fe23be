// VLM Playground: the little that htmx cannot do.
// - the image picker: drop zone, file picker, paste from the clipboard, thumbnails with remove buttons
//   (the chosen files live in a DataTransfer and are put on the form's file input, so htmx sends them);
// - streamed answer text, appended as text (textContent / Text nodes), never parsed as HTML;
// - elapsed seconds on "loading" lines; JSON error bodies shown as text next to the form;
// - the page's own checks of picked images (the server's limits), ratings saved as they are given,
//   copy / expand / lightbox for reading answers, Ctrl/Cmd+Enter, scrolling to new results.
// No eval, no inline handlers, no innerHTML: untrusted strings only ever reach the page as text.
(function () {
  "use strict";

  // ------------------------------------------------------------------ the image picker

  var picked = new DataTransfer();
  var pasteCount = 0;
  var previews = new Map(); // File -> object URL
  var checks = new Map(); // File -> {state: "checking" | "ok" | "no-preview", format, width, height}
  var MB = 1024 * 1024;

  function fileInput() { return document.getElementById("images"); }

  // The server's own limits, put on the drop zone by the template (settings.limits): the page refuses what
  // the server would refuse, at pick time, so nothing is uploaded only to be turned away. The server checks again.
  function limits() {
    var zone = document.getElementById("dropzone");
    var data = zone ? zone.dataset : {};
    function n(key, fallback) { var v = Number(data[key]); return isFinite(v) && v > 0 ? v : fallback; }
    return { images: n("maxImages", Infinity), imageBytes: n("maxImageBytes", Infinity),
             requestBytes: n("maxRequestBytes", Infinity), pixels: n("maxPixels", Infinity),
             totalPixels: n("maxTotalPixels", Infinity) };
  }

  function megabytes(bytes) {
    var mb = bytes / MB;
    return (Number.isInteger(mb) ? String(mb) : String(Number(mb.toPrecision(6)))) + " MB";
  }

  function sizeOf(bytes) { return (bytes / MB).toFixed(1) + " MB"; }

  function sameFile(a, b) {
    return a.name === b.name && a.size === b.size && a.lastModified === b.lastModified && a.type === b.type;
  }

  function sync() {
    var input = fileInput();
    if (input) { input.files = picked.files; }
    renderThumbs();
  }

  var pickProblems = [];
  function showPickProblems() {
    var slot = document.getElementById("error-images");
    if (slot) { slot.textContent = pickProblems.join("\n"); }
  }
  function refuse(message) { pickProblems.push(message); showPickProblems(); }

  // images kept from the comparison being run again: sent by hash (hidden inputs), removable
  function reusedCount() { return document.querySelectorAll("#reused li").length; }

  function totalBytes() {
    var sum = 0;
    for (var i = 0; i < picked.files.length; i++) { sum += picked.files[i].size; }
    return sum;
  }

  function addFiles(files) {
    var lim = limits();
    var leftOut = [];
    var added = [];
    pickProblems = [];
    for (var i = 0; i < files.length; i++) {
      var file = files[i];
      var known = false;
      for (var j = 0; j < picked.files.length; j++) {
        if (sameFile(picked.files[j], file)) { known = true; break; }
      }
      if (known) { continue; }
      if (picked.files.length + reusedCount() >= lim.images) { leftOut.push(file.name); continue; }
      if (file.size === 0) { pickProblems.push(file.name + " is empty"); continue; }
      if (file.size > lim.imageBytes) {
        pickProblems.push(file.name + " is " + sizeOf(file.size) + "; the limit is " + megabytes(lim.imageBytes) +
                          " per image");
        continue;
      }
      if (totalBytes() + file.size > lim.requestBytes) {
        pickProblems.push(file.name + " would make " + sizeOf(totalBytes() + file.size) + " in all; the limit is " +
                          megabytes(lim.requestBytes));
        continue;
      }
      picked.items.add(file);
      checks.set(file, { state: "checking" });
      added.push(file);
    }
    if (leftOut.length) {
      pickProblems.push(leftOut.length + (leftOut.length === 1 ? " image" : " images") + " not added: the limit is " +
                        lim.images + " images (" + leftOut.join(", ") + ")");
    }
    showPickProblems();
    sync();
    added.forEach(function (file) { inspect(file, lim); });
  }

  function removeFile(file) {
    var next = new DataTransfer();
    for (var i = 0; i < picked.files.length; i++) {
      if (picked.files[i] !== file) { next.items.add(picked.files[i]); }
    }
    picked = next;
    checks.delete(file);
    sync();
  }

  // What a file's first bytes say it is. Formats the browser can show get a thumbnail after a real decode;
  // the others that the server reads (TIFF, PPM, ...) get a tile with their name; anything else is refused.
  var SHOWN = { PNG: 1, JPEG: 1, GIF: 1, WEBP: 1, BMP: 1, ICO: 1, AVIF: 1 };
  function sniff(b) {
    function at(offset, text) {
      for (var i = 0; i < text.length; i++) { if (b[offset + i] !== text.charCodeAt(i)) { return false; } }
      return b.length >= offset + text.length;
    }
    if (at(0, "\x89PNG\r\n\x1a\n")) { return "PNG"; }
    if (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) { return "JPEG"; }
    if (at(0, "GIF87a") || at(0, "GIF89a")) { return "GIF"; }
    if (at(0, "RIFF") && at(8, "WEBP")) { return "WEBP"; }
    if (at(0, "BM")) { return "BMP"; }
    if (at(0, "\x00\x00\x01\x00") || at(0, "\x00\x00\x02\x00")) { return "ICO"; }
    if (at(0, "II*\x00") || at(0, "MM\x00*")) { return "TIFF"; }
    if (at(4, "ftypavif") || at(4, "ftypavis")) { return "AVIF"; }
    if (at(4, "ftyphei") || at(4, "ftypmif1") || at(4, "ftypheic")) { return "HEIF"; }
    if (b[0] === 0x50 && b[1] >= 0x31 && b[1] <= 0x37 && (b[2] === 0x0a || b[2] === 0x20 || b[2] === 0x0d ||
        b[2] === 0x09)) { return "PNM"; }
    if (at(0, "\x00\x00\x00\x0cjP  ") || at(0, "\xff\x4f\xff\x51")) { return "JPEG 2000"; }
    if (at(0, "8BPS")) { return "PSD"; }
    if (at(0, "qoif")) { return "QOI"; }
    if (at(0, "DDS ")) { return "DDS"; }
    if (at(0, "icns")) { return "ICNS"; }
    return null;
  }

  function inspect(file, lim) {
    file.slice(0, 32).arrayBuffer().then(function (buffer) {
      var format = sniff(new Uint8Array(buffer));
      if (!format) {
        return file.name + " is not a readable image: its content is not in an image format";
      }
      if (!SHOWN[format]) {
        checks.set(file, { state: "no-preview", format: format });
        return null;
      }
      var probe = new Image();
      probe.src = previewUrl(file);
      return probe.decode().then(function () {
        var w = probe.naturalWidth, h = probe.naturalHeight; // upright: the browser applies EXIF orientation
        if (w * h > lim.pixels) {
          return file.name + " is " + w + "×" + h + " = " + (w * h / 1e6).toFixed(1) + " megapixels; the limit is " +
                 (lim.pixels / 1e6) + " megapixels";
        }
        var others = 0;
        checks.forEach(function (c, f) { if (f !== file && c.width) { others += c.width * c.height; } });
        if (others + w * h > lim.totalPixels) {
          return file.name + " would make " + ((others + w * h) / 1e6).toFixed(1) + " megapixels in all; the limit is " +
                 (lim.totalPixels / 1e6) + " megapixels a request";
        }
        checks.set(file, { state: "ok", format: format, width: w, height: h });
        return null;
      }, function () {
        return file.name + " is not a readable image: the file is damaged or cut short";
      });
    }).then(function (problem) {
      if (!checks.has(file)) { return; } // removed meanwhile
      if (problem) { removeFile(file); refuse(problem); } else { renderThumbs(); }
    }, function () {
      if (checks.has(file)) { removeFile(file); refuse(file.name + " could not be read"); }
    });
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
      var check = checks.get(file) || { state: "checking" };
      keep.add(file);
      var item = document.createElement("li");
      item.className = "thumb-item is-" + check.state;
      var shown;
      if (check.state === "no-preview") {
        shown = document.createElement("span");
        shown.className = "thumb no-preview";
        shown.textContent = check.format;
        shown.title = "the browser cannot preview " + check.format + "; the server reads it";
      } else {
        shown = document.createElement("img");
        shown.className = "thumb";
        shown.alt = file.name;
        if (check.state === "ok") {
          shown.src = previewUrl(file);
          shown.dataset.lightbox = file.name;
          shown.tabIndex = 0;
          shown.setAttribute("role", "button");
          shown.setAttribute("aria-label", "open " + file.name + " full size");
        }
      }
      var name = document.createElement("span");
      name.className = "img-name";
      name.textContent = file.name;
      name.title = file.name + " (" + Math.round(file.size / 1024) + " KB" +
                   (check.width ? ", " + check.width + "×" + check.height : "") + ")";
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "remove";
      remove.dataset.index = String(i);
      remove.setAttribute("aria-label", "remove " + file.name);
      remove.textContent = "×";
      item.append(shown, name, remove);
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
    var kept = event.target.closest ? event.target.closest("#reused button.remove") : null;
    if (kept) {
      event.preventDefault();
      var item = kept.closest("li");
      if (item) { item.remove(); }
      return;
    }
    var button = event.target.closest ? event.target.closest("#thumbs button.remove") : null;
    if (button) {
      event.preventDefault();
      var file = picked.files[Number(button.dataset.index)];
      if (file) { removeFile(file); }
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

  // A comparison whose stream has ended has nothing left to stop.
  document.addEventListener("htmx:sseClose", function (event) {
    if (!event.detail || event.detail.type !== "message") { return; }
    var comparison = event.target.closest ? event.target.closest(".comparison") : null;
    var stopAll = comparison ? comparison.querySelector(".stop-all") : null;
    if (stopAll) { stopAll.remove(); }
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

  // ------------------------------------------------------------------ ratings: saved as they are given

  // A star saves at once (click, or the arrow keys, which move the choice as radio buttons do: ArrowRight
  // raises the score); the note saves when it is left. The form's status says "saving…", "saved" or that a
  // change is not stored yet. A response is only swapped in when the form still holds what was sent, so a
  // star clicked or a note typed meanwhile is never overwritten; it goes in the next request (hx-sync queues
  // it). Every focusable element of the form has an id, so htmx puts the focus back where it was after a swap.
  var sentValues = new WeakMap(); // form -> the values of its request in flight
  var inFlight = new WeakSet();

  function ratingForm(el) { return el && el.closest ? el.closest("form.rating") : null; }

  function ratingValues(form, saved) {
    var score = "";
    form.querySelectorAll(".star-input").forEach(function (input) {
      if (saved ? input.defaultChecked : input.checked) { score = input.value; }
    });
    var note = form.querySelector("textarea.note");
    return score + "\n" + (note ? (saved ? note.defaultValue : note.value) : "");
  }

  function ratingStatus(form, kind, text) {
    var status = form.querySelector(".rating-status");
    if (!status) { return; }
    status.className = "rating-status is-" + kind;
    status.textContent = text;
  }

  function hasScore(form) { return !!form.querySelector(".star-input:checked"); }

  // What is stored, or on its way: the request in flight's values, else those the form was rendered with.
  function pendingValues(form) { return inFlight.has(form) ? sentValues.get(form) : ratingValues(form, true); }

  function saveRating(form) {
    if (!hasScore(form)) {
      if (ratingValues(form, false) !== ratingValues(form, true)) {
        ratingStatus(form, "dirty", "not stored yet: pick a score to save the note");
      }
      return;
    }
    if (ratingValues(form, false) === pendingValues(form)) { return; }
    form.requestSubmit();
  }

  document.addEventListener("change", function (event) {
    if (event.target.classList && event.target.classList.contains("star-input")) {
      var form = ratingForm(event.target);
      if (form) { saveRating(form); }
    }
  });

  document.addEventListener("input", function (event) {
    var form = event.target.classList && event.target.classList.contains("note") ? ratingForm(event.target) : null;
    if (!form) { return; }
    if (ratingValues(form, false) === pendingValues(form)) {
      ratingStatus(form, inFlight.has(form) ? "saving" : "saved", inFlight.has(form) ? "saving…" : "saved");
    } else {
      ratingStatus(form, "dirty", hasScore(form) ? "not stored yet: saves when you leave the note"
                                                 : "not stored yet: pick a score to save the note");
    }
  });

  document.addEventListener("focusout", function (event) {
    var form = event.target.classList && event.target.classList.contains("note") ? ratingForm(event.target) : null;
    if (form) { saveRating(form); }
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.classList || !form.classList.contains("rating")) { return; }
    if (hasScore(form) && ratingValues(form, false) === pendingValues(form)) {
      // the same values are stored or on their way: nothing to send
      event.preventDefault();
      event.stopImmediatePropagation();
      if (!inFlight.has(form)) { ratingStatus(form, "saved", "saved"); }
      return;
    }
    ratingStatus(form, "saving", "saving…");
  }, true);

  document.addEventListener("htmx:configRequest", function (event) {
    var form = event.detail.elt;
    if (form && form.classList && form.classList.contains("rating")) {
      sentValues.set(form, ratingValues(form, false));
      inFlight.add(form);
    }
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail.elt;
    if (form && form.classList && form.classList.contains("rating")) { inFlight.delete(form); }
  });

  document.addEventListener("htmx:beforeSwap", function (event) {
    var form = event.detail.elt;
    if (!form || !form.classList || !form.classList.contains("rating")) { return; }
    if (ratingValues(form, false) !== sentValues.get(form)) {
      event.detail.shouldSwap = false; // changed while the request was out: keep what is on the screen
      ratingStatus(form, "dirty", "not stored yet");
      window.setTimeout(function () {
        var note = form.querySelector("textarea.note");
        if (document.activeElement !== note && !inFlight.has(form)) { saveRating(form); }
      }, 0);
    }
  });

  // Leaving the page with a note typed but not stored (no blur came): send it anyway.
  window.addEventListener("pagehide", function () {
    document.querySelectorAll("form.rating").forEach(function (form) {
      if (!hasScore(form) || ratingValues(form, false) === pendingValues(form) || !navigator.sendBeacon) { return; }
      var data = new FormData(form);
      var rater = document.getElementById("rater");
      if (rater && rater.value) { data.set("rater", rater.value); }
      navigator.sendBeacon(form.action, data);
    });
  });

  // ------------------------------------------------------------------ reading answers: copy, expand, lightbox

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) { return navigator.clipboard.writeText(text); }
    return new Promise(function (resolve, reject) { // plain http on a LAN address: the older way
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "visually-hidden";
      document.body.append(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      area.remove();
      if (ok) { resolve(); } else { reject(new Error("copy refused")); }
    });
  }

  function flash(button, text) {
    var before = button.dataset.label || button.textContent;
    button.dataset.label = before;
    button.textContent = text;
    window.setTimeout(function () { button.textContent = before; }, 1500);
  }

  document.addEventListener("click", function (event) {
    var copy = event.target.closest ? event.target.closest("button[data-copy]") : null;
    if (copy) {
      var id = copy.dataset.copy;
      var source = document.getElementById("raw-" + id) || document.getElementById("text-" + id);
      copyText(source ? source.textContent : "").then(function () { flash(copy, "copied"); },
                                                       function () { flash(copy, "copy failed"); });
      return;
    }
    var expand = event.target.closest ? event.target.closest("button[data-expand]") : null;
    if (expand) {
      var panel = document.getElementById("panel-" + expand.dataset.expand);
      if (!panel) { return; }
      var wide = panel.classList.toggle("expanded");
      expand.setAttribute("aria-pressed", wide ? "true" : "false");
      expand.textContent = wide ? "collapse" : "expand";
      if (wide) { panel.scrollIntoView({ block: "nearest" }); }
    }
  });

  var lightboxOpener = null;
  function openLightbox(src, name, opener) {
    var box = document.getElementById("lightbox");
    var img = document.getElementById("lightbox-image");
    if (!box || !img || typeof box.showModal !== "function") { return false; }
    img.src = src;
    img.alt = name;
    document.getElementById("lightbox-name").textContent = name;
    lightboxOpener = opener;
    box.showModal();
    return true;
  }

  document.addEventListener("click", function (event) {
    var box = document.getElementById("lightbox");
    if (box && event.target === box) { box.close(); return; } // a click on the backdrop
    var link = event.target.closest ? event.target.closest("[data-lightbox]") : null;
    if (!link) { return; }
    var src = link.getAttribute("href") || link.getAttribute("src");
    if (src && openLightbox(src, link.dataset.lightbox, link)) { event.preventDefault(); }
  });

  document.addEventListener("keydown", function (event) {
    var el = event.target;
    if ((event.key === "Enter" || event.key === " ") && el.dataset && el.dataset.lightbox !== undefined &&
        el.tagName === "IMG") {
      event.preventDefault();
      openLightbox(el.getAttribute("src"), el.dataset.lightbox, el);
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("lightbox");
    if (!box) { return; }
    box.addEventListener("close", function () {
      document.getElementById("lightbox-image").removeAttribute("src");
      if (lightboxOpener && document.body.contains(lightboxOpener)) { lightboxOpener.focus(); }
      lightboxOpener = null;
    });
  });

  // ------------------------------------------------------------------ the compare form

  // Ctrl+Enter (Cmd+Enter on a Mac) in the prompt compares, as the Compare button does.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey) || event.target.id !== "prompt") { return; }
    var form = document.getElementById("compare-form");
    var go = form ? form.querySelector("button.go:not(.battle-go)") : null;
    if (go && !go.disabled) {
      event.preventDefault();
      form.requestSubmit(go);
    }
  });

  // The models' list says which are chosen while it is folded.
  function chosenSummary() {
    var out = document.getElementById("models-chosen");
    if (!out) { return; }
    var names = [];
    document.querySelectorAll("#compare-form input[name=models]:checked").forEach(function (box) {
      var label = box.closest("label");
      var name = label ? label.querySelector(".model-name") : null;
      names.push(name ? name.textContent : box.value);
    });
    out.textContent = names.length ? names.length + " chosen: " + names.join(", ") : "none chosen";
  }
  document.addEventListener("change", function (event) {
    if (event.target.name === "models") { chosenSummary(); }
  });
  document.addEventListener("DOMContentLoaded", chosenSummary);

  // New results below the fold (a phone, a long model list): bring them into view.
  document.addEventListener("htmx:afterSwap", function (event) {
    if (!event.detail.target || event.detail.target.id !== "results") { return; }
    var results = event.detail.target;
    if (!results.querySelector(".comparison")) { return; }
    var top = results.getBoundingClientRect().top;
    if (top > window.innerHeight * 0.6 || top < 0) {
      var calm = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;
      results.scrollIntoView({ block: "start", behavior: calm ? "auto" : "smooth" });
    }
  });

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
