import { useEffect, useMemo, useRef, useState } from "react";
import {
  allows,
  api,
  duration,
  errorMessage,
  ExecutionOperation,
  ExecutionStatus,
  isAbort,
  statusName,
  when,
} from "../api";
import { link, Problem, Status, useLoad, useMeta } from "../common";
import type { Execution } from "../gen/trainyard/v1/execution_pb";
import type { BatchItemOutcome, ListExecutionsResponse } from "../gen/trainyard/v1/execution_service_pb";
import { WatchEventType } from "../gen/trainyard/v1/execution_service_pb";

const PAGE_SIZE = 50;
const ACTIVE = [ExecutionStatus.PENDING, ExecutionStatus.RUNNING, ExecutionStatus.STOPPING];
const STATUSES = [
  ExecutionStatus.PENDING,
  ExecutionStatus.RUNNING,
  ExecutionStatus.COMPLETED,
  ExecutionStatus.DEAD,
  ExecutionStatus.STOPPING,
  ExecutionStatus.STOPPED,
  ExecutionStatus.UNKNOWN,
];

// The first page of the unfiltered list, asked for as the script starts (before the
// first paint, which a browser without a GPU may take long to make).
let prefetched: Promise<ListExecutionsResponse> | null = null;
export function prefetchExecutions() {
  prefetched = api.executions.listExecutions({ pageSize: PAGE_SIZE });
  prefetched.catch(() => undefined);
}

type Filter = { status: ExecutionStatus; scenarioId: string; executableId: string; configurationId: string };

function filterFromHash(): Filter {
  const query = new URLSearchParams(window.location.hash.split("?")[1] ?? "");
  return {
    status: Number(query.get("status") ?? 0) as ExecutionStatus,
    scenarioId: query.get("scenario") ?? "",
    executableId: query.get("executable") ?? "",
    configurationId: query.get("configuration") ?? "",
  };
}

export type Outcome = { id: string; ok: boolean; text: string };

function outcomesOf(action: string, items: BatchItemOutcome[]): Outcome[] {
  return items.map((o) => ({
    id: o.executionId,
    ok: o.ok,
    text: o.ok ? `${action}` : `${o.reason || "refused"}: ${o.message}`,
  }));
}

export function Outcomes({ outcomes }: { outcomes: Outcome[] }) {
  if (outcomes.length === 0) return null;
  return (
    <section aria-label="Outcomes" className="outcomes" aria-live="polite">
      <h2>Outcomes</h2>
      <ul>
        {outcomes.map((o) => (
          <li key={o.id} className={o.ok ? "ok" : "refused"} data-execution={o.id} data-ok={o.ok}>
            <code>{o.id}</code> {o.ok ? "✓" : "✗"} {o.text}
          </li>
        ))}
      </ul>
    </section>
  );
}

export function ExecutionsScreen() {
  const meta = useMeta();
  const [filter, setFilter] = useState<Filter>(filterFromHash);
  const [tokens, setTokens] = useState<string[]>([""]); // page tokens: tokens[i] opens page i
  const [page, setPage] = useState(0);
  const [rows, setRows] = useState<Execution[]>([]);
  const [total, setTotal] = useState(0);
  const [next, setNext] = useState("");
  const [error, setError] = useState("");
  const [loading, setLoading] = useState(true);
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [outcomes, setOutcomes] = useState<Outcome[]>([]);
  const [reloads, setReloads] = useState(0);
  const [live, setLive] = useState(false);
  const executables = useLoad(() => api.executables.listExecutables({ pageSize: 200 }), []);

  const request = useMemo(
    () => ({
      statuses: filter.status ? [filter.status] : [],
      scenarioId: filter.scenarioId,
      executableId: filter.executableId,
      configurationId: filter.configurationId,
    }),
    [filter],
  );

  // The page.
  useEffect(() => {
    let current = true;
    setLoading(true);
    const fresh = () => api.executions.listExecutions({ ...request, pageSize: PAGE_SIZE, pageToken: tokens[page] });
    const unfiltered = page === 0 && !request.statuses.length && !request.scenarioId && !request.executableId && !request.configurationId;
    const early = unfiltered ? prefetched : null;
    prefetched = null;
    (early ? early.catch(fresh) : fresh())
      .then(
        (answer) => {
          if (!current) return;
          setRows(answer.executions);
          setTotal(answer.totalSize);
          setNext(answer.nextPageToken);
          setError("");
          setLoading(false);
        },
        (e) => {
          if (!current) return;
          setError(errorMessage(e));
          setLoading(false);
        },
      );
    return () => {
      current = false;
    };
  }, [request, tokens, page, reloads]);

  // When the first rows are on screen (the frame after they were committed): the
  // "first meaningful paint" bench/console.py reads.
  useEffect(() => {
    const w = window as unknown as { __firstRowsAt?: number };
    if (rows.length && w.__firstRowsAt === undefined) {
      requestAnimationFrame(() => {
        w.__firstRowsAt = performance.now();
      });
    }
  }, [rows]);

  // Live: a watch of the active executions matching the filter; rows change in place,
  // a new execution reloads the first page.
  const pageRef = useRef(page);
  pageRef.current = page;
  useEffect(() => {
    const abort = new AbortController();
    let reloadTimer: number | undefined;
    const scheduleReload = () => {
      if (pageRef.current !== 0) return;
      window.clearTimeout(reloadTimer);
      reloadTimer = window.setTimeout(() => setReloads((r) => r + 1), 200);
    };
    async function watch() {
      let cursor = "";
      let delay = 250;
      while (!abort.signal.aborted) {
        try {
          const stream = api.executions.watchExecutions(
            {
              statuses: ACTIVE,
              scenarioId: filter.scenarioId,
              executableId: filter.executableId,
              configurationId: filter.configurationId,
              afterCursor: cursor,
            },
            { signal: abort.signal },
          );
          for await (const event of stream) {
            setLive(true);
            delay = 250;
            if (event.cursor) cursor = event.cursor;
            const changed = event.execution;
            if (!changed) continue;
            if (event.type === WatchEventType.CREATED) {
              scheduleReload();
              continue;
            }
            setRows((old) => old.map((row) => (row.id === changed.id ? { ...changed, configurationName: changed.configurationName || row.configurationName } : row)));
          }
        } catch (e) {
          if (abort.signal.aborted || isAbort(e)) return;
        }
        setLive(false);
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 5000);
        scheduleReload();
      }
    }
    if (meta.capabilities?.statusWatch) {
      void watch();
    } else {
      const timer = window.setInterval(() => setReloads((r) => r + 1), 3000);
      abort.signal.addEventListener("abort", () => window.clearInterval(timer));
    }
    return () => {
      abort.abort();
      window.clearTimeout(reloadTimer);
    };
  }, [filter, meta]);

  const applyFilter = (f: Filter) => {
    setFilter(f);
    setTokens([""]);
    setPage(0);
    setSelected(new Set());
  };

  const chosen = rows.filter((r) => selected.has(r.id));
  const bulk = meta.capabilities?.bulkUpdates;

  async function stopSelected() {
    const ids = chosen.map((r) => r.id);
    try {
      const answer = await api.executions.batchStopExecutions({ executionIds: ids });
      setOutcomes(outcomesOf("stop requested", answer.outcomes));
    } catch (e) {
      setOutcomes(ids.map((id) => ({ id, ok: false, text: errorMessage(e) })));
    }
    setSelected(new Set());
    setReloads((r) => r + 1);
  }

  async function deleteSelected() {
    const ids = chosen.map((r) => r.id);
    try {
      const answer = await api.executions.batchDeleteExecutions({ executionIds: ids });
      setOutcomes(outcomesOf("deleted", answer.outcomes));
    } catch (e) {
      setOutcomes(ids.map((id) => ({ id, ok: false, text: errorMessage(e) })));
    }
    setSelected(new Set());
    setReloads((r) => r + 1);
  }

  async function one(row: Execution, operation: ExecutionOperation) {
    try {
      if (operation === ExecutionOperation.STOP) {
        await api.executions.stopExecution({ executionId: row.id });
        setOutcomes([{ id: row.id, ok: true, text: "stop requested" }]);
      } else {
        await api.executions.deleteExecution({ executionId: row.id });
        setOutcomes([{ id: row.id, ok: true, text: "deleted" }]);
      }
    } catch (e) {
      setOutcomes([{ id: row.id, ok: false, text: errorMessage(e) }]);
    }
    setReloads((r) => r + 1);
  }

  const allOnPage = rows.length > 0 && rows.every((r) => selected.has(r.id));

  return (
    <div>
      <h1>Executions</h1>
      <form
        className="filters"
        aria-label="Filters"
        onSubmit={(e) => {
          e.preventDefault();
          const data = new FormData(e.currentTarget);
          applyFilter({
            status: Number(data.get("status")) as ExecutionStatus,
            scenarioId: String(data.get("scenario") ?? ""),
            executableId: String(data.get("executable") ?? ""),
            configurationId: String(data.get("configuration") ?? "").trim(),
          });
        }}
      >
        <label>
          Status
          <select name="status" defaultValue={filter.status}>
            <option value={0}>any</option>
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {statusName(s)}
              </option>
            ))}
          </select>
        </label>
        <label>
          Executable
          <select name="executable" defaultValue={filter.executableId}>
            <option value="">any</option>
            {executables.value?.executables.map((e) => (
              <option key={e.id} value={e.id}>
                {e.id}
              </option>
            ))}
          </select>
        </label>
        <label>
          Scenario
          <input name="scenario" defaultValue={filter.scenarioId} size={10} />
        </label>
        <label>
          Configuration id
          <input name="configuration" defaultValue={filter.configurationId} size={12} />
        </label>
        <button type="submit">Apply</button>
      </form>

      <div className="toolbar">
        <span role="status" aria-live="polite" className="count">
          {loading ? "Loading…" : `${total} executions`}
          {meta.capabilities?.statusWatch && (
            <span className={live ? "live on" : "live"} title={live ? "updating live" : "reconnecting"}>
              {live ? " ● live" : " ○ reconnecting"}
            </span>
          )}
        </span>
        {bulk && (
          <>
            <button
              type="button"
              disabled={!chosen.some((r) => allows(r, ExecutionOperation.STOP))}
              onClick={() => void stopSelected()}
            >
              Stop selected ({chosen.length})
            </button>
            <button
              type="button"
              disabled={!chosen.some((r) => allows(r, ExecutionOperation.DELETE))}
              onClick={() => void deleteSelected()}
            >
              Delete selected ({chosen.length})
            </button>
          </>
        )}
      </div>
      <Problem error={error} />
      <Outcomes outcomes={outcomes} />
      <div className="scroll">
        <table className="list" aria-label="Executions">
          <thead>
            <tr>
              <th>
                <input
                  type="checkbox"
                  aria-label="Select all on this page"
                  checked={allOnPage}
                  onChange={() => setSelected(allOnPage ? new Set() : new Set(rows.map((r) => r.id)))}
                />
              </th>
              <th>Id</th>
              <th>Status</th>
              <th>Scenario</th>
              <th>Executable</th>
              <th>Configuration</th>
              <th>Created</th>
              <th>Duration</th>
              <th>Actions</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((row) => (
              <tr key={row.id} data-execution={row.id} data-status={statusName(row.status)}>
                <td>
                  <input
                    type="checkbox"
                    aria-label={`Select ${row.id}`}
                    checked={selected.has(row.id)}
                    onChange={() => {
                      const s = new Set(selected);
                      if (s.has(row.id)) s.delete(row.id);
                      else s.add(row.id);
                      setSelected(s);
                    }}
                  />
                </td>
                <td>
                  <a href={link("executions", row.id)}>
                    <code>{row.id}</code>
                  </a>
                </td>
                <td>
                  <Status status={row.status} />
                </td>
                <td>{row.scenarioId}</td>
                <td>
                  <a href={link("executables", row.executableId)}>{row.executableId}</a>
                </td>
                <td>
                  <a href={link("configurations", row.configurationId)}>{row.configurationName || row.configurationId}</a>
                </td>
                <td>{when(row.createTime)}</td>
                <td>{duration(row.startTime, row.completeTime)}</td>
                <td className="actions">
                  <button
                    type="button"
                    aria-label={`Stop ${row.id}`}
                    disabled={!allows(row, ExecutionOperation.STOP)}
                    onClick={() => void one(row, ExecutionOperation.STOP)}
                  >
                    Stop
                  </button>
                  <button
                    type="button"
                    aria-label={`Delete ${row.id}`}
                    disabled={!allows(row, ExecutionOperation.DELETE)}
                    onClick={() => void one(row, ExecutionOperation.DELETE)}
                  >
                    Delete
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <nav className="pager" aria-label="Pages">
        <button type="button" disabled={page === 0} onClick={() => setPage(page - 1)}>
          Previous
        </button>
        <span>
          Page {page + 1} of {Math.max(1, Math.ceil(total / PAGE_SIZE))}
        </span>
        <button
          type="button"
          disabled={!next}
          onClick={() => {
            if (tokens.length <= page + 1) setTokens([...tokens, next]);
            setPage(page + 1);
          }}
        >
          Next
        </button>
      </nav>
    </div>
  );
}
