import { api, when } from "../api";
import { link, Problem, Section, useLoad } from "../common";
import { ArtifactKind } from "../gen/trainyard/v1/artifact_pb";
import { ParameterType } from "../gen/trainyard/v1/executable_pb";
import { ArtifactLink } from "./Execution";
import { useState } from "react";

export function kind(k: ArtifactKind): string {
  return (ArtifactKind[k] ?? "").replace("ARTIFACT_KIND_", "").toLowerCase();
}

export function paramType(t: ParameterType): string {
  return (ParameterType[t] ?? "").replace("PARAMETER_TYPE_", "").toLowerCase();
}

export function ExecutablesScreen() {
  const list = useLoad(() => api.executables.listExecutables({ pageSize: 200 }), []);
  return (
    <div>
      <h1>Executables</h1>
      <Problem error={list.error} />
      <div className="scroll">
        <table className="list" aria-label="Executables">
          <thead>
            <tr>
              <th>Id</th>
              <th>Name</th>
              <th>Version</th>
              <th>Scenario</th>
              <th>Deployable</th>
              <th>Parameters</th>
            </tr>
          </thead>
          <tbody>
            {list.value?.executables.map((e) => (
              <tr key={e.id}>
                <td>
                  <a href={link("executables", e.id)}>{e.id}</a>
                </td>
                <td>{e.name}</td>
                <td>{e.version}</td>
                <td>{e.scenarioId}</td>
                <td>{e.deployable ? "yes" : "no"}</td>
                <td>{e.parameters.map((p) => p.name).join(", ")}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </div>
  );
}

export function ExecutableScreen({ id }: { id: string }) {
  const one = useLoad(() => api.executables.getExecutable({ executableId: id }), [id]);
  const e = one.value?.executable;
  return (
    <div>
      <h1>
        Executable <code>{id}</code>
      </h1>
      <Problem error={one.error} />
      {e && (
        <>
          <p>
            <a className="button" href={link("configurations", "new", e.id)}>
              Create configuration
            </a>{" "}
            <a href={`#/executions?executable=${encodeURIComponent(e.id)}`}>Its executions</a>
          </p>
          <dl>
            <dt>Name</dt>
            <dd>{e.name}</dd>
            <dt>Id</dt>
            <dd>{e.id}</dd>
            <dt>Version</dt>
            <dd>{e.version}</dd>
            <dt>Scenario</dt>
            <dd>{e.scenarioId}</dd>
            <dt>Deployable</dt>
            <dd>{e.deployable ? "yes" : "no"}</dd>
            <dt>Description</dt>
            <dd>{e.description || "—"}</dd>
            <dt>Updated</dt>
            <dd>{when(e.updateTime)}</dd>
          </dl>
          <Section title="Parameters">
            <table className="kv" aria-label="Parameters">
              <thead>
                <tr>
                  <th>Name</th>
                  <th>Type</th>
                  <th>Default</th>
                  <th>Description</th>
                </tr>
              </thead>
              <tbody>
                {e.parameters.map((p) => (
                  <tr key={p.name}>
                    <td>{p.name}</td>
                    <td>{paramType(p.type)}</td>
                    <td>{p.defaultValue ?? <em>required</em>}</td>
                    <td>{p.description}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </Section>
          <Section title="Input artifacts">
            <ul>
              {e.inputArtifacts.map((a) => (
                <li key={a.name}>
                  {a.name} ({kind(a.kind)}) {a.description}
                </li>
              ))}
            </ul>
          </Section>
          <Section title="Output artifacts">
            <ul>
              {e.outputArtifacts.map((a) => (
                <li key={a.name}>
                  {a.name} ({kind(a.kind)}) from step {a.step} {a.description}
                </li>
              ))}
            </ul>
          </Section>
          <Section title="Steps">
            <ol className="steps">
              {(e.workflowSteps.length ? e.workflowSteps : e.steps.map((name) => ({ name, template: "", resourcePlan: "", after: [] as string[] }))).map((s) => (
                <li key={s.name}>
                  <strong>{s.name}</strong> {s.template && <small>template {s.template}</small>}{" "}
                  {s.resourcePlan && <small>plan {s.resourcePlan}</small>}{" "}
                  {s.after.length > 0 && <small>after {s.after.join(", ")}</small>}
                </li>
              ))}
            </ol>
          </Section>
        </>
      )}
    </div>
  );
}

export function ScenariosScreen() {
  const list = useLoad(() => api.scenarios.listScenarios({ pageSize: 200 }), []);
  return (
    <div>
      <h1>Scenarios</h1>
      <Problem error={list.error} />
      <table className="list" aria-label="Scenarios">
        <thead>
          <tr>
            <th>Id</th>
            <th>Name</th>
            <th>Executables</th>
            <th>Description</th>
          </tr>
        </thead>
        <tbody>
          {list.value?.scenarios.map((s) => (
            <tr key={s.id}>
              <td>{s.id}</td>
              <td>{s.name}</td>
              <td>{s.executableCount}</td>
              <td>{s.description}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export function ArtifactsScreen() {
  const [k, setK] = useState<ArtifactKind>(ArtifactKind.UNSPECIFIED);
  const list = useLoad(() => api.artifacts.listArtifacts({ pageSize: 200, kind: k }), [k]);
  return (
    <div>
      <h1>Artifacts</h1>
      <form className="filters" aria-label="Filters" onSubmit={(e) => e.preventDefault()}>
        <label>
          Kind
          <select value={k} onChange={(e) => setK(Number(e.target.value) as ArtifactKind)}>
            <option value={0}>any</option>
            {[ArtifactKind.DATASET, ArtifactKind.MODEL, ArtifactKind.RESULTSET, ArtifactKind.OTHER].map((x) => (
              <option key={x} value={x}>
                {kind(x)}
              </option>
            ))}
          </select>
        </label>
      </form>
      <Problem error={list.error} />
      <div className="scroll">
        <table className="list" aria-label="Artifacts">
          <thead>
            <tr>
              <th>Id</th>
              <th>Artifact</th>
              <th>Scenario</th>
              <th>From execution</th>
              <th>Created</th>
            </tr>
          </thead>
          <tbody>
            {list.value?.artifacts.map((a) => (
              <tr key={a.id}>
                <td>
                  <code>{a.id}</code>
                </td>
                <td>
                  <ArtifactLink artifact={a} />
                </td>
                <td>{a.scenarioId}</td>
                <td>{a.executionId && <a href={link("executions", a.executionId)}>{a.executionId}</a>}</td>
                <td>{when(a.createTime)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </div>
  );
}
