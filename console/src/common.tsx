import { createContext, useContext, useEffect, useRef, useState, type ReactNode } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { errorMessage, statusName } from "./api";
import type { ExecutionStatus } from "./gen/trainyard/v1/execution_pb";
import type { GetMetaResponse } from "./gen/trainyard/v1/meta_service_pb";

export const MetaContext = createContext<GetMetaResponse | null>(null);

export function useMeta(): GetMetaResponse {
  const meta = useContext(MetaContext);
  if (!meta) throw new Error("no meta");
  return meta;
}

// ----------------------------------------------------------------- routing
// Hash routes (#/executions/ID/logs): the server serves one page.

function currentRoute(): string[] {
  return window.location.hash.replace(/^#\/?/, "").split("?")[0].split("/").filter(Boolean).map(decodeURIComponent);
}

export function useRoute(): string[] {
  const [route, setRoute] = useState(currentRoute);
  useEffect(() => {
    const changed = () => setRoute(currentRoute());
    window.addEventListener("hashchange", changed);
    return () => window.removeEventListener("hashchange", changed);
  }, []);
  return route;
}

export function navigate(...parts: string[]) {
  window.location.hash = "#/" + parts.map(encodeURIComponent).join("/");
}

export function link(...parts: string[]): string {
  return "#/" + parts.map(encodeURIComponent).join("/");
}

// ----------------------------------------------------------------- loading

export type Loaded<T> = { value?: T; error?: string; loading: boolean; reload: () => void };

// Runs `load` on mount and whenever `deps` change; the latest answer wins.
export function useLoad<T>(load: () => Promise<T>, deps: unknown[]): Loaded<T> {
  const [state, setState] = useState<{ value?: T; error?: string; loading: boolean }>({ loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let current = true;
    setState((s) => ({ ...s, loading: true }));
    load().then(
      (value) => current && setState({ value, loading: false }),
      (error) => current && setState({ error: errorMessage(error), loading: false }),
    );
    return () => {
      current = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, tick]);
  return { ...state, reload: () => setTick((t) => t + 1) };
}

export function Problem({ error }: { error?: string }) {
  return error ? (
    <p role="alert" className="error">
      {error}
    </p>
  ) : null;
}

export function Status({ status }: { status: ExecutionStatus }) {
  const name = statusName(status).replace("EXECUTION_STATUS_", "");
  return <span className={`status status-${name.toLowerCase()}`}>{name}</span>;
}

export function shortName(value: string, prefix: string): string {
  return value.replace(prefix, "");
}

export function Section({ title, children }: { title: string; children: ReactNode }) {
  return (
    <section aria-label={title}>
      <h2>{title}</h2>
      {children}
    </section>
  );
}

// ----------------------------------------------------------------- charts

export type Series = { label: string; points: Array<[number, number]> };

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];

// Line chart of several series over a shared x axis (steps), with a legend.
export function LineChart({ title, series, xLabel }: { title: string; series: Series[]; xLabel: string }) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const element = box.current;
    if (!element || series.length === 0) return;
    const xs = Array.from(new Set(series.flatMap((s) => s.points.map((p) => p[0])))).sort((a, b) => a - b);
    const index = new Map(xs.map((x, i) => [x, i]));
    const ys = series.map((s) => {
      const column: Array<number | null> = xs.map(() => null);
      for (const [x, y] of s.points) column[index.get(x)!] = y;
      return column;
    });
    const width = Math.max(280, Math.min(element.clientWidth || 640, 900));
    const chart = new uPlot(
      {
        title,
        width,
        height: 300,
        scales: { x: { time: false } },
        axes: [{ label: xLabel }, {}],
        series: [
          { label: xLabel },
          ...series.map((s, i) => ({ label: s.label, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true })),
        ],
      },
      [xs, ...ys] as uPlot.AlignedData,
      element,
    );
    return () => chart.destroy();
  }, [title, series, xLabel]);
  return <div ref={box} className="chart" role="img" aria-label={`${title} chart`} data-series={series.length} />;
}
