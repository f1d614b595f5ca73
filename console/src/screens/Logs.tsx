import { useEffect, useLayoutEffect, useMemo, useRef, useState } from "react";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { api, errorMessage, ExecutionStatus, isAbort } from "../api";
import { useMeta } from "../common";
import type { Execution } from "../gen/trainyard/v1/execution_pb";
import { LogStream } from "../gen/trainyard/v1/log_pb";

// One received line, as shown.
const FINAL = new Set([
  ExecutionStatus.COMPLETED,
  ExecutionStatus.DEAD,
  ExecutionStatus.STOPPED,
  ExecutionStatus.UNKNOWN,
]);

type Line = { seq: number; time: string; step: string; stream: LogStream; text: string };

const ROW = 18; // px per line: the view renders only the lines in sight
const OVERSCAN = 8; // lines drawn beyond each edge of the view
const REDRAW_MS = 100;
const STREAMS: Array<[LogStream, string]> = [
  [LogStream.STDOUT, "stdout"],
  [LogStream.STDERR, "stderr"],
  [LogStream.SYSTEM, "system"],
];

type Filter = { step: string; streams: Set<LogStream>; search: string };

function matches(line: Line, f: Filter): boolean {
  if (f.step && line.step !== f.step) return false;
  if (!f.streams.has(line.stream)) return false;
  if (f.search && !line.text.toLowerCase().includes(f.search)) return false;
  return true;
}

// Receives the execution's lines (TailLogs with follow), reconnecting after a dropped
// connection from the last sequence number received: no line missed, none twice.
export function LogsView({ execution }: { execution: Execution }) {
  const meta = useMeta();
  const lines = useRef<Line[]>([]);
  const shown = useRef<number[]>([]); // indexes into lines that pass the filter
  const filterRef = useRef<Filter>({ step: "", streams: new Set(STREAMS.map(([s]) => s)), search: "" });
  const [, setFrame] = useState(0);
  const [state, setState] = useState<"connecting" | "live" | "reconnecting" | "ended">("connecting");
  const [problem, setProblem] = useState("");
  const [paused, setPaused] = useState(false);
  const pausedAt = useRef(0);
  const [step, setStep] = useState("");
  const [streams, setStreams] = useState<Set<LogStream>>(filterRef.current.streams);
  const [search, setSearch] = useState("");
  const [scrollTop, setScrollTop] = useState(0);
  const view = useRef<HTMLDivElement>(null);
  const pending = useRef(false);
  const follow = Boolean(meta.capabilities?.logStreaming);

  // Redraw at most once per animation frame and at most every REDRAW_MS, however fast
  // lines come: the frames in between stay free for the browser.
  const lastDraw = useRef(0);
  const redraw = () => {
    if (pending.current) return;
    pending.current = true;
    const wait = Math.max(0, lastDraw.current + REDRAW_MS - performance.now());
    setTimeout(() => {
      requestAnimationFrame((now) => {
        pending.current = false;
        lastDraw.current = now;
        setFrame((f) => f + 1);
      });
    }, wait);
  };

  useEffect(() => {
    const abort = new AbortController();
    lines.current = [];
    shown.current = [];
    setState("connecting");
    let last = 0;
    async function receive() {
      let delay = 250;
      while (!abort.signal.aborted) {
        try {
          const stream = api.logs.tailLogs(
            { executionId: execution.id, follow, afterSequence: BigInt(last) },
            { signal: abort.signal },
          );
          let connected = false;
          for await (const message of stream) {
            if (!connected) {
              // Once per connection: per message would ask React for a render each time.
              connected = true;
              setState("live");
              setProblem("");
            }
            delay = 250;
            const f = filterRef.current;
            for (const l of message.lines) {
              const seq = Number(l.sequence);
              if (seq <= last) continue; // already shown
              last = seq;
              const line: Line = {
                seq,
                time: l.time ? timestampDate(l.time).toISOString().slice(11, 23) : "",
                step: l.step,
                stream: l.stream,
                text: l.text,
              };
              const index = lines.current.push(line) - 1;
              if (matches(line, f)) shown.current.push(index);
            }
            (window as any).__logLines = lines.current.length;
            (window as any).__logLastSeq = last;
            redraw();
          }
          // The stream ends when the execution has ended, and also when a server
          // shuts down: only the first is the end.
          const now = await api.executions.getExecution({ executionId: execution.id }, { signal: abort.signal });
          if (!follow || FINAL.has(now.execution?.status ?? ExecutionStatus.UNSPECIFIED)) {
            setState("ended");
            return;
          }
          setState("reconnecting");
        } catch (e) {
          if (abort.signal.aborted || isAbort(e)) return;
          setState("reconnecting");
          setProblem(errorMessage(e));
        }
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 3000);
      }
    }
    void receive();
    return () => abort.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [execution.id, follow]);

  // A new filter: recompute which lines pass.
  useEffect(() => {
    const f: Filter = { step, streams, search: search.toLowerCase() };
    filterRef.current = f;
    const passing: number[] = [];
    lines.current.forEach((line, i) => {
      if (matches(line, f)) passing.push(i);
    });
    shown.current = passing;
    redraw();
  }, [step, streams, search]);

  const count = paused ? pausedAt.current : shown.current.length;
  const height = useRef(480);
  // Following: the newest lines are in sight, so the view never has to read back
  // where it is (no layout forced between frames).
  const following = !paused;
  const top = following ? Math.max(0, count * ROW - height.current) : scrollTop;
  const expectedTop = useRef(-1);
  useLayoutEffect(() => {
    const element = view.current;
    if (!element) return;
    height.current = element.clientHeight || 480;
    if (following) {
      expectedTop.current = Math.max(0, count * ROW - height.current);
      element.scrollTop = expectedTop.current;
    }
  });

  const first = Math.max(0, Math.floor(top / ROW) - OVERSCAN);
  const lastRow = Math.min(count, Math.ceil((top + height.current) / ROW) + OVERSCAN);
  const slots = lastRow - first + 1;
  const rows = [];
  for (let i = first; i < lastRow; i++) {
    const line = lines.current[shown.current[i]];
    if (!line) continue;
    rows.push(
      <div
        key={i % slots /* the same elements, new text: no nodes made or dropped */}
        className={`line stream-${line.stream}`}
        style={{ top: i * ROW }}
        data-seq={line.seq}
      >
        <span className="seq">{line.seq}</span> <span className="time">{line.time}</span>{" "}
        <span className="step">[{line.step}]</span> {line.text}
      </div>,
    );
  }

  const download = useMemo(
    () => () => {
      const text = lines.current.map((l) => `${l.seq}\t${l.time}\t${l.step}\t${l.text}`).join("\n") + "\n";
      const url = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
      const a = document.createElement("a");
      a.href = url;
      a.download = `${execution.id}.log`;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    },
    [execution.id],
  );

  return (
    <div className="logs">
      <form className="filters" aria-label="Log filters" onSubmit={(e) => e.preventDefault()}>
        <label>
          Step
          <select value={step} onChange={(e) => setStep(e.target.value)}>
            <option value="">all steps</option>
            {execution.stepDetails.map((s) => (
              <option key={s.name} value={s.name}>
                {s.name}
              </option>
            ))}
          </select>
        </label>
        <fieldset>
          <legend>Streams</legend>
          {STREAMS.map(([s, label]) => (
            <label key={s}>
              <input
                type="checkbox"
                checked={streams.has(s)}
                onChange={() => {
                  const next = new Set(streams);
                  if (next.has(s)) next.delete(s);
                  else next.add(s);
                  setStreams(next);
                }}
              />
              {label}
            </label>
          ))}
        </fieldset>
        <label>
          Search
          <input type="search" value={search} onChange={(e) => setSearch(e.target.value)} />
        </label>
        <button
          type="button"
          onClick={() => {
            if (!paused) {
              pausedAt.current = shown.current.length;
              setScrollTop(view.current?.scrollTop ?? 0);
            }
            setPaused(!paused);
          }}
        >
          {paused ? "Resume" : "Pause"}
        </button>
        <button type="button" onClick={download}>
          Download
        </button>
      </form>
      <p role="status" className="muted" data-testid="log-state" data-state={state}>
        {state === "live" ? (paused ? "paused" : "following") : state} · {lines.current.length} lines
        {search || step || streams.size < STREAMS.length ? ` · ${shown.current.length} shown` : ""}
        {paused && shown.current.length > count ? ` · ${shown.current.length - count} new` : ""}
        {problem && state === "reconnecting" ? ` · ${problem}` : ""}
      </p>
      <div
        className="logview"
        ref={view}
        tabIndex={0}
        role="log"
        aria-label="Log lines"
        onScroll={(e) => {
          const at = e.currentTarget.scrollTop;
          if (following) {
            // Our own scroll to the newest line, or the user scrolling back: pause.
            if (Math.abs(at - expectedTop.current) <= 2) return;
            pausedAt.current = shown.current.length;
            setPaused(true);
          }
          setScrollTop(at);
        }}
      >
        <div style={{ height: count * ROW, position: "relative" }}>{rows}</div>
      </div>
    </div>
  );
}
