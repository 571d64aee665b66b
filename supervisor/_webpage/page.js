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
    const cell = el("td", null, "action");
    if (!canCancel) return cell;
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
    cell.appendChild(button);
    return cell;
  }

  function fillTable(id, rows, more, makeRow) {
    const table = document.getElementById(id);
    const body = table.tBodies[0];
    body.replaceChildren(...rows.map(makeRow));
    if (more > 0) {
      const row = el("tr");
      const cell = el("td", "… and " + more + " more", "more");
      cell.colSpan = table.tHead.rows[0].cells.length;
      row.appendChild(cell);
      body.appendChild(row);
    }
    table.classList.toggle("hidden", rows.length === 0);
    document.getElementById(id + "-empty").classList.toggle("hidden", rows.length > 0);
  }

  function taskRow(task, since, now) {
    const row = el("tr");
    row.dataset.taskId = task.task_id;
    row.append(
      el("td", task.name, "name"),
      el("td", task.task_id, "id"),
      el("td", task.attempts),
      el("td", seconds(since, now)),
      cancelButton(task),
    );
    return row;
  }

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
    fillTable("running", data.running, data.truncated.running, (t) =>
      taskRow(t, t.started_at, now),
    );
    fillTable("pending", data.pending, data.truncated.pending, (t) =>
      taskRow(t, t.created_at, now),
    );
    fillTable("services", data.services, data.truncated.services, function (s) {
      const row = el("tr");
      row.dataset.taskId = s.task_id;
      row.append(
        el("td", s.name, "name"),
        el("td", s.task_id, "id"),
        el("td", s.state),
        el("td", s.restart),
        el("td", s.restarts),
        s.state === "running" || s.state === "pending" ? cancelButton(s) : el("td"),
      );
      return row;
    });
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
