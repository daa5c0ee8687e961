// Keyboard shortcuts for the review pages. No build step: plain ES2017, served as a file so the
// Content-Security-Policy can forbid inline scripts.
(function () {
  "use strict";
  const page = document.body.dataset.page;
  const help = document.getElementById("help");

  function typing(el) {
    return el && (el.tagName === "TEXTAREA" || el.tagName === "SELECT" ||
      (el.tagName === "INPUT" && !["checkbox", "radio", "button", "submit"].includes(el.type)));
  }

  function submitReview(action) {
    const form = document.getElementById("review-form");
    if (!form || !form.querySelector("[data-action]")) return;
    const button = form.querySelector('[data-action="' + action + '"]');
    form.requestSubmit(button);
  }

  function claimNext() {
    const form = document.getElementById("claim-form") || document.getElementById("next-form");
    if (form) form.requestSubmit();
  }

  // Queue page: j/k move a highlighted row, Enter/o opens it.
  let selected = -1;
  function rows() { return Array.from(document.querySelectorAll("tr[data-href]")); }
  function select(delta) {
    const all = rows();
    if (!all.length) return;
    selected = Math.max(0, Math.min(all.length - 1, selected + delta));
    all.forEach((r, i) => r.classList.toggle("selected", i === selected));
    all[selected].scrollIntoView({ block: "nearest" });
  }

  document.addEventListener("keydown", function (e) {
    const el = document.activeElement;
    if (typing(el)) {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        if (el.id === "answer") submitReview("correct");
        else if (el.id === "reason") submitReview("reject");
        else if (el.form) el.form.requestSubmit();
      } else if (e.key === "Escape") {
        el.blur();
      }
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const key = e.key;
    if (key === "?") { if (help) help.showModal(); return; }
    if (key === "n") { e.preventDefault(); claimNext(); return; }
    if (key === "g" || key === "Escape") { window.location.href = "/queue"; return; }
    if (page === "queue") {
      if (key === "j") select(1);
      else if (key === "k") select(-1);
      else if ((key === "Enter" || key === "o") && selected >= 0) window.location.href = rows()[selected].dataset.href;
      return;
    }
    if (page !== "item") return;
    if (/^[1-9]$/.test(key)) {
      const box = document.querySelector('input[name="oracle"][data-index="' + key + '"]');
      if (box && !box.disabled) { box.checked = !box.checked; box.closest("li").classList.toggle("oracle", box.checked); }
      return;
    }
    if (key === "a") { e.preventDefault(); submitReview("approve"); }
    else if (key === "s") { e.preventDefault(); submitReview("skip"); }
    else if (key === "c") {
      const answer = document.getElementById("answer");
      if (answer) { e.preventDefault(); answer.focus(); answer.select(); }
    } else if (key === "r") {
      const reason = document.getElementById("reason");
      if (reason) { e.preventDefault(); reason.focus(); }
    }
  });

  document.querySelectorAll('input[name="oracle"]').forEach(function (box) {
    box.addEventListener("change", function () { box.closest("li").classList.toggle("oracle", box.checked); });
  });
  if (page === "queue" && rows().length) select(1);

  // Keep the lease while the reviewer is on the item page (renewed at a third of its length).
  const review = document.getElementById("review-form");
  const token = review && review.querySelector('input[name="lease_token"]');
  if (review && token && token.value) {
    const every = Math.max(5, Number(review.dataset.leaseSeconds) / 3) * 1000;
    const csrf = review.querySelector('input[name="csrf_token"]').value;
    setInterval(function () {
      fetch("/api/v1/items/" + review.dataset.item + "/lease", {
        method: "POST", credentials: "same-origin",
        headers: { "content-type": "application/json", "x-csrf-token": csrf },
        body: JSON.stringify({ lease_token: token.value }),
      });
    }, every);
  }
})();
