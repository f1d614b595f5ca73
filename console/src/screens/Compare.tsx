import { useMemo, useState } from "react";
import { api, errorMessage } from "../api";
import { LineChart, link, Problem, Status, useLoad, type Series } from "../common";
import type { CompareExecutionsResponse } from "../gen/trainyard/v1/metric_service_pb";
import { MetricView } from "../gen/trainyard/v1/metric_service_pb";
import { MetricAggregation } from "../gen/trainyard/v1/metric_pb";

// Compare executions of an executable (or named ones): parameters and metrics side by
// side, the best marked, and one metric's learning curves overlaid.
export function CompareScreen() {
  const executables = useLoad(() => api.executables.listExecutables({ pageSize: 200 }), []);
  const [executableId, setExecutableId] = useState("");
  const [ids, setIds] = useState("");
  const [by, setBy] = useState("");
  const [ascending, setAscending] = useState(false);
  const [result, setResult] = useState<CompareExecutionsResponse | null>(null);
  const [error, setError] = useState("");
  const [curve, setCurve] = useState("");
  const [series, setSeries] = useState<Series[]>([]);

  async function compare() {
    try {
      const executionIds = ids.split(/[\s,]+/).filter(Boolean);
      const answer = await api.metrics.compareExecutions({
        executionIds,
        executableId: executionIds.length ? "" : executableId,
        orderBy: by ? { name: by, aggregation: MetricAggregation.LATEST } : undefined,
        ascending,
        pageSize: 100,
      });
      setResult(answer);
      setError("");
      const names = metricNames(answer);
      const chosen = curve && names.includes(curve) ? curve : by || names[0] || "";
      setCurve(chosen);
      await loadCurves(answer, chosen);
    } catch (e) {
      setError(errorMessage(e));
    }
  }

  async function loadCurves(answer: CompareExecutionsResponse, name: string) {
    if (!name || answer.executions.length === 0) {
      setSeries([]);
      return;
    }
    const label = labels(answer);
    const data = await api.metrics.listMetrics({
      executionIds: answer.executions.map((e) => e.executionId),
      names: [name],
      view: MetricView.SERIES,
      pageSize: 10000,
    });
    setSeries(
      data.executions.map((e) => ({
        label: label.get(e.executionId) ?? e.executionId,
        points: e.metrics.map((m, i): [number, number] => [Number(m.step ?? BigInt(i)), m.value]),
      })),
    );
  }

  const names = useMemo(() => (result ? metricNames(result) : []), [result]);
  const parameterKeys = useMemo(
    () => Array.from(new Set(result?.executions.flatMap((e) => e.parameters.map((p) => p.key)) ?? [])),
    [result],
  );

  return (
    <div>
      <h1>Compare</h1>
      <form
        className="filters"
        aria-label="Compare"
        onSubmit={(e) => {
          e.preventDefault();
          void compare();
        }}
      >
        <label>
          Executable
          <select value={executableId} onChange={(e) => setExecutableId(e.target.value)}>
            <option value="">choose…</option>
            {executables.value?.executables.map((e) => (
              <option key={e.id} value={e.id}>
                {e.id}
              </option>
            ))}
          </select>
        </label>
        <label>
          or execution ids
          <input value={ids} onChange={(e) => setIds(e.target.value)} placeholder="id, id, …" />
        </label>
        <label>
          Best by metric
          <input value={by} onChange={(e) => setBy(e.target.value)} placeholder="e.g. accuracy" size={10} />
        </label>
        <label>
          <input type="checkbox" checked={ascending} onChange={(e) => setAscending(e.target.checked)} />
          lower is better
        </label>
        <button type="submit">Compare</button>
      </form>
      <Problem error={error} />
      {result && (
        <>
          <p role="status">{result.totalSize} executions compared</p>
          <div className="scroll">
            <table className="list" aria-label="Compared executions">
              <thead>
                <tr>
                  <th>Best</th>
                  <th>Configuration</th>
                  <th>Execution</th>
                  <th>Status</th>
                  {parameterKeys.map((k) => (
                    <th key={`p-${k}`}>{k}</th>
                  ))}
                  {names.map((n) => (
                    <th key={`m-${n}`}>{n}</th>
                  ))}
                </tr>
              </thead>
              <tbody>
                {result.executions.map((e) => (
                  <tr key={e.executionId} className={e.best ? "best" : ""} data-best={e.best}>
                    <td>{e.best ? <strong aria-label="best">★ best</strong> : ""}</td>
                    <td>{e.configurationName || e.configurationId}</td>
                    <td>
                      <a href={link("executions", e.executionId)}>
                        <code>{e.executionId}</code>
                      </a>
                    </td>
                    <td>
                      <Status status={e.status} />
                    </td>
                    {parameterKeys.map((k) => (
                      <td key={`p-${k}`}>{e.parameters.find((p) => p.key === k)?.value ?? ""}</td>
                    ))}
                    {names.map((n) => {
                      const v = e.metrics.find((m) => m.name === n)?.value;
                      return <td key={`m-${n}`}>{v === undefined ? "" : v.toPrecision(4)}</td>;
                    })}
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <label>
            Learning curve of
            <select
              value={curve}
              onChange={(e) => {
                setCurve(e.target.value);
                void loadCurves(result, e.target.value);
              }}
            >
              {names.map((n) => (
                <option key={n} value={n}>
                  {n}
                </option>
              ))}
            </select>
          </label>
          {series.length > 0 && <LineChart title={curve} series={series} xLabel="step" />}
        </>
      )}
    </div>
  );
}

function metricNames(answer: CompareExecutionsResponse): string[] {
  return Array.from(new Set(answer.executions.flatMap((e) => e.metrics.map((m) => m.name))));
}

// Legend labels: the configuration's name; where two executions share one, numbered.
function labels(answer: CompareExecutionsResponse): Map<string, string> {
  const counts = new Map<string, number>();
  for (const e of answer.executions) {
    const name = e.configurationName || e.configurationId;
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  const seen = new Map<string, number>();
  const out = new Map<string, string>();
  for (const e of answer.executions) {
    const name = e.configurationName || e.configurationId;
    const n = (seen.get(name) ?? 0) + 1;
    seen.set(name, n);
    out.set(e.executionId, (counts.get(name) ?? 0) > 1 ? `${name} #${n}` : name);
  }
  return out;
}
