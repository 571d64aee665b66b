// The task page: polls api/tasks and redraws with DOM text nodes only.
// No innerHTML anywhere: every string from the server is set as text, so a
// task name or an error message can never become markup or script.
"use strict";

(function () {
  const pollMs = Math.max(100, Number(document.body.dataset.pollMs) || 1000);
  const STATS = ["running", "pending", "spawned", "succeeded", "failed", "cancelled"];
  let canCancel = false;
  let shownFailures = null;

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function seconds(fromIso, now) {
    if (!fromIso) return "";
    const s = Math.max(0, (now - Date.parse(fromIso)) / 1000);
    if (s < 60) return s.toFixed(1) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.floor(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function setStatus(text, offline) {
    const status = document.getElementById("status");
    status.textContent = text;
    status.classList.toggle("offline", offline);
  }

  function cancelButton(task) {
    const button = el("button", "Cancel");
    button.type = "button";
    button.setAttribute("aria-label", "Cancel task " + task.task_id);
    button.addEventListener("click", async function () {
      button.disabled = true;
      try {
        const response = await fetch(
          "api/tasks/" + encodeURIComponent(task.task_id) + "/cancel",
          {
            method: "POST",
            headers: { "Content-Type": "application/json" },
            body: "{}",
            cache: "no-store",
          },
        );
        if (!response.ok) {
          const reply = await response.json().catch(() => ({}));
          setStatus("Cancel refused: " + (reply.error || response.status), true);
        }
      } catch (error) {
        setStatus("Cancel failed: " + error, true);
      }
      poll();
    });
    return button;
  }

  // One row per task id, kept from poll to poll and updated in place: a
  // row rebuilt at every poll would replace the Cancel button under a
  // person's pointer (a click whose press and release land on two
  // different buttons is lost), and the selection of an id with it.
  // cells(item) gives the row's texts; the last cell holds the button when
  // cancellable(item) and the page may cancel.
  function fillTable(id, items, more, cells, cancellable) {
    const table = document.getElementById(id);
    const body = table.tBodies[0];
    const kept = new Map();
    for (const row of Array.from(body.rows)) {
      if (row.dataset.taskId) kept.set(row.dataset.taskId, row);
    }
    const rows = items.map(function (item) {
      const texts = cells(item);
      let row = kept.get(item.task_id);
      if (row === undefined) {
        row = el("tr");
        row.dataset.taskId = item.task_id;
        texts.forEach((_, i) => row.appendChild(el("td", null, i === 0 ? "name" : null)));
        row.cells[1].className = "id";
        row.appendChild(el("td", null, "action"));
      }
      texts.forEach(function (text, i) {
        const cell = row.cells[i];
        const value = text === null || text === undefined ? "" : String(text);
        if (cell.textContent !== value) cell.textContent = value;
      });
      const action = row.cells[texts.length];
      const wanted = canCancel && cancellable(item);
      if (wanted && action.firstChild === null) action.appendChild(cancelButton(item));
      if (!wanted && action.firstChild !== null) action.replaceChildren();
      return row;
    });
    if (more > 0) {
      const row = el("tr");
      const cell = el("td", "… and " + more + " more", "more");
      cell.colSpan = table.tHead.rows[0].cells.length;
      row.appendChild(cell);
      rows.push(row);
    }
    const current = Array.from(body.rows);
    const same = current.length === rows.length && current.every((row, i) => row === rows[i]);
    if (!same) body.replaceChildren(...rows);
    table.classList.toggle("hidden", items.length === 0);
    document.getElementById(id + "-empty").classList.toggle("hidden", items.length > 0);
  }

  const always = () => true;

  function failure(task) {
    const box = el("article", null, "failure");
    box.dataset.taskId = task.task_id;
    const title = el("h3", task.name);
    title.append(" ", el("span", task.task_id, "id"));
    box.append(title);
    box.append(el("p", (task.error_type || "Error") + ": " + (task.error || ""), "error"));
    const when = task.completed_at ? new Date(task.completed_at).toLocaleString() : "";
    box.append(el("p", "Failed " + when + " after " + task.attempts + " attempt(s)", "more"));
    if (task.traceback) box.append(el("pre", task.traceback, "traceback"));
    return box;
  }

  function render(data) {
    canCancel = data.can_cancel === true;
    const now = Date.now();
    document.getElementById("supervisor-name").textContent =
      "— " + data.supervisor.name + " (" + data.supervisor.state + ")";
    const stats = document.getElementById("stats");
    stats.replaceChildren(
      ...STATS.map(function (key) {
        const item = el("div");
        item.id = "stat-" + key;
        item.append(el("dt", key), el("dd", data.stats[key]));
        return item;
      }),
    );
    fillTable(
      "running",
      data.running,
      data.truncated.running,
      (t) => [t.name, t.task_id, t.attempts, seconds(t.started_at, now)],
      always,
    );
    fillTable(
      "pending",
      data.pending,
      data.truncated.pending,
      (t) => [t.name, t.task_id, t.attempts, seconds(t.created_at, now)],
      always,
    );
    fillTable(
      "services",
      data.services,
      data.truncated.services,
      (s) => [s.name, s.task_id, s.state, s.restart, s.restarts],
      (s) => s.state === "running" || s.state === "pending",
    );
    // Failures are redrawn only when they change, so that a person can
    // select and copy a traceback between polls.
    const failuresKey = JSON.stringify([data.failures, data.truncated.failures]);
    if (failuresKey !== shownFailures) {
      shownFailures = failuresKey;
      const failures = document.getElementById("failures");
      failures.replaceChildren(...data.failures.map(failure));
      if (data.truncated.failures > 0) {
        failures.append(el("p", "… and " + data.truncated.failures + " older", "more"));
      }
    }
    document.getElementById("failures-empty").classList.toggle(
      "hidden",
      data.failures.length > 0,
    );
    setStatus("Updated " + new Date(now).toLocaleTimeString(), false);
  }

  let timer = null;
  let inFlight = false;
  async function poll() {
    if (inFlight) return; // the running poll schedules the next one
    clearTimeout(timer);
    inFlight = true;
    try {
      const response = await fetch("api/tasks", {
        cache: "no-store",
        headers: { Accept: "application/json" },
      });
      const data = await response.json();
      if (response.ok) render(data);
      else setStatus("Unavailable: " + (data.error || response.status), true);
    } catch (error) {
      setStatus("Offline: retrying every " + pollMs / 1000 + " s", true);
    } finally {
      inFlight = false;
      timer = setTimeout(poll, pollMs);
    }
  }

  poll();
})();
