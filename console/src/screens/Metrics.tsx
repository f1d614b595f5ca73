import { useMemo } from "react";
import { api, when } from "../api";
import { LineChart, Problem, Section, useLoad, type Series } from "../common";
import { CustomInfoFormat, type CustomInfo } from "../gen/trainyard/v1/metric_pb";
import { MetricView } from "../gen/trainyard/v1/metric_service_pb";

// A custom info value that is a matrix (a list of equal-length lists, or an object
// with one) is shown as a table; other JSON as text.
function matrixOf(info: CustomInfo): { rows: unknown[][]; labels?: string[] } | null {
  if (info.format !== CustomInfoFormat.JSON) return null;
  try {
    const value = JSON.parse(info.value);
    const candidate = Array.isArray(value) ? value : value?.matrix ?? value?.values;
    if (Array.isArray(candidate) && candidate.length && candidate.every((r: unknown) => Array.isArray(r))) {
      const labels = Array.isArray(value?.labels) ? value.labels.map(String) : undefined;
      return { rows: candidate as unknown[][], labels };
    }
  } catch {
    return null;
  }
  return null;
}

function CustomInfoView({ info }: { info: CustomInfo }) {
  const matrix = matrixOf(info);
  if (!matrix) return <pre className="custom">{info.value}</pre>;
  return (
    <table className="matrix" aria-label={info.name}>
      {matrix.labels && (
        <thead>
          <tr>
            <th></th>
            {matrix.labels.map((l) => (
              <th key={l}>{l}</th>
            ))}
          </tr>
        </thead>
      )}
      <tbody>
        {matrix.rows.map((row, i) => (
          <tr key={i}>
            {matrix.labels && <th>{matrix.labels[i]}</th>}
            {row.map((cell, j) => (
              <td key={j}>{String(cell)}</td>
            ))}
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function MetricsView({ executionId }: { executionId: string }) {
  const latest = useLoad(
    () => api.metrics.listMetrics({ executionIds: [executionId], view: MetricView.LATEST }),
    [executionId],
  );
  const series = useLoad(
    () => api.metrics.listMetrics({ executionIds: [executionId], view: MetricView.SERIES, pageSize: 10000 }),
    [executionId],
  );
  const data = latest.value?.executions[0];
  const charts = useMemo(() => {
    const byName = new Map<string, Array<[number, number]>>();
    for (const m of series.value?.executions[0]?.metrics ?? []) {
      const points = byName.get(m.name) ?? [];
      points.push([Number(m.step ?? BigInt(points.length)), m.value]);
      byName.set(m.name, points);
    }
    return [...byName.entries()].map(([name, points]): [string, Series[]] => [name, [{ label: name, points }]]);
  }, [series.value]);
  return (
    <div className="metrics">
      <Problem error={latest.error || series.error} />
      <Section title="Latest values">
        {data?.metrics.length ? (
          <table className="kv" aria-label="Latest metric values">
            <thead>
              <tr>
                <th>Metric</th>
                <th>Value</th>
                <th>Step</th>
                <th>Time</th>
              </tr>
            </thead>
            <tbody>
              {data.metrics.map((m) => (
                <tr key={m.name}>
                  <td>{m.name}</td>
                  <td>{m.value}</td>
                  <td>{m.step?.toString() ?? ""}</td>
                  <td>{when(m.time)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        ) : (
          <p className="muted">No metrics.</p>
        )}
      </Section>
      <Section title="Tags">
        <ul>
          {data?.tags.map((t) => (
            <li key={t.key}>
              {t.key} = {t.value}
            </li>
          ))}
        </ul>
      </Section>
      <Section title="Custom info">
        {data?.customInfo.map((c) => (
          <div key={c.name}>
            <h3>{c.name}</h3>
            <CustomInfoView info={c} />
          </div>
        ))}
      </Section>
      <Section title="Series">
        {charts.map(([name, s]) => (
          <LineChart key={name} title={name} series={s} xLabel="step" />
        ))}
      </Section>
    </div>
  );
}
