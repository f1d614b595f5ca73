import { useEffect, useState } from "react";
import { allows, api, duration, errorMessage, ExecutionOperation, isAbort, statusName, when } from "../api";
import { link, navigate, Problem, Section, Status, useLoad, useMeta } from "../common";
import type { Execution, StatusTransition, StepDetail } from "../gen/trainyard/v1/execution_pb";
import { StepPhase, TargetStatus } from "../gen/trainyard/v1/execution_pb";
import { ArtifactKind, type Artifact } from "../gen/trainyard/v1/artifact_pb";
import { LogsView } from "./Logs";
import { MetricsView } from "./Metrics";

export function ExecutionScreen({ id, tab }: { id: string; tab: string }) {
  const meta = useMeta();
  const [execution, setExecution] = useState<Execution | null>(null);
  const [history, setHistory] = useState<StatusTransition[]>([]);
  const [error, setError] = useState("");
  const [notice, setNotice] = useState("");
  const [gone, setGone] = useState(false);

  // The execution, then live: one watch of it that stays open.
  useEffect(() => {
    const abort = new AbortController();
    async function follow() {
      try {
        const answer = await api.executions.getExecution({ executionId: id });
        setExecution(answer.execution ?? null);
        setHistory(answer.execution?.history ?? []);
        setError("");
      } catch (e) {
        setError(errorMessage(e));
        return;
      }
      let cursor = "";
      let delay = 250;
      while (!abort.signal.aborted && meta.capabilities?.statusWatch) {
        try {
          for await (const event of api.executions.watchExecutions(
            { executionId: id, keepWatching: true, afterCursor: cursor },
            { signal: abort.signal },
          )) {
            delay = 250;
            if (event.cursor) cursor = event.cursor;
            if (event.execution) {
              const changed = event.execution;
              setExecution((old) => ({ ...changed, history: old?.history ?? [], configurationName: changed.configurationName || old?.configurationName || "" }));
            }
            const transition = event.transition;
            if (transition) {
              setHistory((old) => (old.some((t) => t.sequence === transition.sequence) ? old : [...old, transition]));
            }
          }
          setGone(true); // the stream ends when the execution is deleted
          return;
        } catch (e) {
          if (abort.signal.aborted || isAbort(e)) return;
        }
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 5000);
      }
    }
    void follow();
    return () => abort.abort();
  }, [id, meta]);

  async function stop() {
    try {
      const answer = await api.executions.stopExecution({ executionId: id });
      if (answer.execution) setExecution(answer.execution);
      setNotice("Stop requested.");
    } catch (e) {
      setNotice(errorMessage(e));
    }
  }

  async function rerun() {
    try {
      const answer = await api.executions.createExecution({ rerunOf: id, requestId: crypto.randomUUID() });
      navigate("executions", answer.execution!.id);
    } catch (e) {
      setNotice(errorMessage(e));
    }
  }

  async function remove() {
    try {
      await api.executions.deleteExecution({ executionId: id });
      navigate("executions");
    } catch (e) {
      setNotice(errorMessage(e));
    }
  }

  if (error) return <Problem error={error} />;
  if (!execution) return <p role="status">Loading…</p>;
  const tabs: Array<[string, string, boolean]> = [
    ["overview", "Overview", true],
    ["logs", "Logs", Boolean(meta.capabilities?.logs)],
    ["metrics", "Metrics", Boolean(meta.capabilities?.metrics)],
  ];
  return (
    <div>
      <h1>
        Execution <code>{execution.id}</code>
      </h1>
      <div className="toolbar">
        <span aria-live="polite" data-testid="execution-status">
          <Status status={execution.status} />
        </span>
        <button type="button" disabled={!allows(execution, ExecutionOperation.STOP)} onClick={() => void stop()}>
          Stop
        </button>
        <button type="button" disabled={!allows(execution, ExecutionOperation.DELETE)} onClick={() => void remove()}>
          Delete
        </button>
        <button type="button" disabled={!allows(execution, ExecutionOperation.RERUN)} onClick={() => void rerun()}>
          Re-run
        </button>
        {gone && <span role="status">This execution was deleted.</span>}
        {notice && <span role="status">{notice}</span>}
      </div>
      <nav className="tabs" aria-label="Execution views">
        {tabs
          .filter(([, , shown]) => shown)
          .map(([name, label]) => (
            <a key={name} href={link("executions", id, name)} aria-current={tab === name ? "page" : undefined}>
              {label}
            </a>
          ))}
      </nav>
      {tab === "logs" ? (
        <LogsView execution={execution} />
      ) : tab === "metrics" ? (
        <MetricsView executionId={id} />
      ) : (
        <Overview execution={execution} history={history} />
      )}
    </div>
  );
}

function kindName(kind: ArtifactKind) {
  return (ArtifactKind[kind] ?? "").replace("ARTIFACT_KIND_", "").toLowerCase();
}

export function ArtifactLink({ artifact }: { artifact: Artifact }) {
  const href = artifact.url.startsWith("http") ? artifact.url : undefined;
  return (
    <span>
      {artifact.name} <small>({kindName(artifact.kind)})</small>{" "}
      {href ? <a href={href}>{artifact.url}</a> : <code>{artifact.url}</code>}
    </span>
  );
}

// Columns by depth: a step is one column right of the deepest step it runs after.
export function dagColumns(steps: StepDetail[], edges: Map<string, string[]>) {
  const known = new Set(steps.map((s) => s.name));
  const depth = new Map<string, number>();
  const after = (name: string) => (edges.get(name) ?? []).filter((d) => known.has(d));
  for (const s of steps) {
    // Workflow order lists a step after the steps it waits for.
    depth.set(s.name, Math.max(-1, ...after(s.name).map((d) => depth.get(d) ?? -1)) + 1);
  }
  const columns: StepDetail[][] = [];
  for (const s of steps) {
    const d = depth.get(s.name) ?? 0;
    (columns[d] ??= []).push(s);
  }
  return columns.map((column) => column.map((s) => ({ step: s, after: after(s.name) })));
}

function StepsDag({ steps, edges }: { steps: StepDetail[]; edges?: Map<string, string[]> }) {
  if (steps.length === 0) return <p className="muted">No steps yet.</p>;
  const columns = dagColumns(steps, edges ?? new Map());
  return (
    <div className="dag" role="group" aria-label="Steps as a DAG, in columns by dependency depth">
      {columns.map((column, i) => (
        <ol key={i} className="dag-column steps" aria-label={`Column ${i + 1}`} data-column={i + 1}>
          {column.map(({ step: s, after }) => {
            const phase = (StepPhase[s.phase] ?? "").replace("STEP_PHASE_", "");
            return (
              <li key={s.name} className={`phase-${phase.toLowerCase()}`} data-testid="dag-step" data-step={s.name}>
                <strong>{s.name}</strong> {phase}
                {s.exitCode !== undefined && <span> exit code {s.exitCode}</span>}
                {after.length > 0 && <div className="after">after {after.join(", ")}</div>}
                <div className="muted">
                  {when(s.startTime)} {s.finishTime ? `→ ${when(s.finishTime)} (${duration(s.startTime, s.finishTime)})` : ""}
                </div>
                {s.message && <div className="muted">{s.message}</div>}
              </li>
            );
          })}
        </ol>
      ))}
    </div>
  );
}

function Overview({ execution, history }: { execution: Execution; history: StatusTransition[] }) {
  const configuration = useLoad(
    () => api.configurations.getConfiguration({ configurationId: execution.configurationId }),
    [execution.configurationId],
  );
  const inputs = useLoad(async () => {
    const bindings = configuration.value?.configuration?.inputArtifactBindings ?? [];
    return Promise.all(
      bindings.map(async (b) => {
        try {
          return { key: b.key, artifact: (await api.artifacts.getArtifact({ artifactId: b.artifactId })).artifact };
        } catch {
          return { key: b.key, artifact: undefined, id: b.artifactId };
        }
      }),
    );
  }, [configuration.value]);
  // The DAG's edges: each step's `after`, from the workflow steps of the executable
  // version the configuration runs (the newest when it names none).
  const version = configuration.value?.configuration?.executableVersion ?? "";
  const edges = useLoad(async () => {
    if (configuration.loading) return undefined; // the version is not known yet
    try {
      const answer = await api.executables.getExecutable({ executableId: execution.executableId, version });
      return new Map((answer.executable?.workflowSteps ?? []).map((w) => [w.name, w.after]));
    } catch {
      return new Map<string, string[]>();
    }
  }, [execution.executableId, version, configuration.loading]);
  const target = (TargetStatus[execution.targetStatus] ?? "").replace("TARGET_STATUS_", "");
  return (
    <div className="overview">
      <Section title="Status">
        <dl>
          <dt>Status</dt>
          <dd>
            <Status status={execution.status} />
          </dd>
          <dt>Target status</dt>
          <dd>{target}</dd>
          <dt>Message</dt>
          <dd data-testid="status-message">{execution.statusMessage || "—"}</dd>
          <dt>Scenario</dt>
          <dd>{execution.scenarioId}</dd>
          <dt>Executable</dt>
          <dd>
            <a href={link("executables", execution.executableId)}>{execution.executableId}</a>
          </dd>
          {execution.rerunOf && (
            <>
              <dt>Re-run of</dt>
              <dd>
                <a href={link("executions", execution.rerunOf)}>
                  <code>{execution.rerunOf}</code>
                </a>
              </dd>
            </>
          )}
          <dt>Created</dt>
          <dd>{when(execution.createTime)}</dd>
          <dt>Submitted</dt>
          <dd>{when(execution.submitTime)}</dd>
          <dt>Started</dt>
          <dd>{when(execution.startTime)}</dd>
          <dt>Completed</dt>
          <dd>{when(execution.completeTime)}</dd>
          <dt>Duration</dt>
          <dd>{duration(execution.startTime, execution.completeTime)}</dd>
        </dl>
      </Section>
      <Section title="Timeline">
        <ol className="timeline">
          {history.map((t) => (
            <li key={String(t.sequence)}>
              <time>{when(t.time)}</time> {t.fromStatus ? statusName(t.fromStatus).replace("EXECUTION_STATUS_", "") + " → " : ""}
              <strong>{statusName(t.toStatus).replace("EXECUTION_STATUS_", "")}</strong> <small>{t.cause}</small>
              {t.message && <div className="muted">{t.message}</div>}
            </li>
          ))}
        </ol>
      </Section>
      <Section title="Steps">
        <StepsDag steps={execution.stepDetails} edges={edges.value} />
      </Section>
      <Section title="Configuration">
        <Problem error={configuration.error} />
        {configuration.value?.configuration && (
          <>
            <p>
              <a href={link("configurations", execution.configurationId)}>
                {configuration.value.configuration.name || execution.configurationId}
              </a>
            </p>
            <table className="kv" aria-label="Parameters">
              <thead>
                <tr>
                  <th>Parameter</th>
                  <th>Value</th>
                </tr>
              </thead>
              <tbody>
                {configuration.value.configuration.parameterBindings.map((p) => (
                  <tr key={p.key}>
                    <td>{p.key}</td>
                    <td>{p.value}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </>
        )}
      </Section>
      <Section title="Input artifacts">
        <ul>
          {inputs.value?.map((i) => (
            <li key={i.key}>
              {i.key}: {i.artifact ? <ArtifactLink artifact={i.artifact} /> : <code>{(i as { id?: string }).id}</code>}
            </li>
          ))}
        </ul>
      </Section>
      <Section title="Output artifacts">
        {execution.outputArtifacts.length === 0 ? (
          <p className="muted">None yet.</p>
        ) : (
          <ul>
            {execution.outputArtifacts.map((a) => (
              <li key={a.id}>
                <ArtifactLink artifact={a} />
              </li>
            ))}
          </ul>
        )}
      </Section>
    </div>
  );
}
