import { useState } from "react";
import { api, errorMessage, fieldViolations, when } from "../api";
import { link, navigate, Problem, Section, useLoad } from "../common";
import { ParameterType } from "../gen/trainyard/v1/executable_pb";
import { kind, paramType } from "./Catalog";

export function ConfigurationsScreen() {
  const list = useLoad(() => api.configurations.listConfigurations({ pageSize: 200 }), []);
  return (
    <div>
      <h1>Configurations</h1>
      <p>
        <a className="button" href={link("configurations", "new")}>
          Create configuration
        </a>
      </p>
      <Problem error={list.error} />
      <div className="scroll">
        <table className="list" aria-label="Configurations">
          <thead>
            <tr>
              <th>Name</th>
              <th>Id</th>
              <th>Executable</th>
              <th>Parameters</th>
              <th>Created</th>
            </tr>
          </thead>
          <tbody>
            {list.value?.configurations.map((c) => (
              <tr key={c.id}>
                <td>
                  <a href={link("configurations", c.id)}>{c.name}</a>
                </td>
                <td>
                  <code>{c.id}</code>
                </td>
                <td>{c.executableId}</td>
                <td>{c.parameterBindings.map((p) => `${p.key}=${p.value}`).join(" ")}</td>
                <td>{when(c.createTime)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </div>
  );
}

export function ConfigurationScreen({ id }: { id: string }) {
  const one = useLoad(() => api.configurations.getConfiguration({ configurationId: id }), [id]);
  const [error, setError] = useState("");
  const c = one.value?.configuration;
  async function start() {
    try {
      const answer = await api.executions.createExecution({ configurationId: id, requestId: crypto.randomUUID() });
      navigate("executions", answer.execution!.id);
    } catch (e) {
      setError(errorMessage(e));
    }
  }
  return (
    <div>
      <h1>Configuration {c?.name}</h1>
      <Problem error={one.error || error} />
      {c && (
        <>
          <p>
            <button type="button" onClick={() => void start()}>
              Create execution
            </button>{" "}
            <a href={`#/executions?configuration=${encodeURIComponent(c.id)}`}>Its executions</a>
          </p>
          <dl>
            <dt>Id</dt>
            <dd>
              <code>{c.id}</code>
            </dd>
            <dt>Executable</dt>
            <dd>
              <a href={link("executables", c.executableId)}>{c.executableId}</a> version {c.executableVersion}
            </dd>
            <dt>Scenario</dt>
            <dd>{c.scenarioId}</dd>
            <dt>Created</dt>
            <dd>{when(c.createTime)}</dd>
          </dl>
          <Section title="Parameters">
            <table className="kv" aria-label="Parameters">
              <tbody>
                {c.parameterBindings.map((p) => (
                  <tr key={p.key}>
                    <th>{p.key}</th>
                    <td>{p.value}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </Section>
          <Section title="Input artifacts">
            <ul>
              {c.inputArtifactBindings.map((b) => (
                <li key={b.key}>
                  {b.key}: <code>{b.artifactId}</code>
                </li>
              ))}
            </ul>
          </Section>
        </>
      )}
    </div>
  );
}

// The create form, built from the executable's placeholders; the server checks every
// value, and each field shows the server's message about it.
export function NewConfigurationScreen({ executableId }: { executableId: string }) {
  const executables = useLoad(() => api.executables.listExecutables({ pageSize: 200 }), []);
  const [chosen, setChosen] = useState(executableId);
  const one = useLoad(
    async () => (chosen ? (await api.executables.getExecutable({ executableId: chosen })).executable : undefined),
    [chosen],
  );
  const artifacts = useLoad(() => api.artifacts.listArtifacts({ pageSize: 500 }), []);
  const [name, setName] = useState("");
  const [values, setValues] = useState<Record<string, string>>({});
  const [bound, setBound] = useState<Record<string, string>>({});
  const [errors, setErrors] = useState<Map<string, string>>(new Map());
  const [general, setGeneral] = useState("");
  const executable = one.value;

  async function submit() {
    if (!executable) return;
    const parameters = executable.parameters.filter((p) => (values[p.name] ?? "") !== "");
    const inputs = executable.inputArtifacts.filter((a) => bound[a.name]);
    try {
      const answer = await api.configurations.createConfiguration({
        configuration: {
          name,
          executableId: executable.id,
          scenarioId: executable.scenarioId,
          parameterBindings: parameters.map((p) => ({ key: p.name, value: values[p.name] })),
          inputArtifactBindings: inputs.map((a) => ({ key: a.name, artifactId: bound[a.name] })),
        },
        requestId: crypto.randomUUID(),
      });
      navigate("configurations", answer.configuration!.id);
    } catch (e) {
      // Field paths name what was sent: parameter_bindings[i] is the i-th sent.
      const byField = new Map<string, string>();
      const rest: string[] = [];
      for (const [field, description] of fieldViolations(e)) {
        const p = /^configuration\.parameter_bindings\[(\d+)\]/.exec(field);
        const a = /^configuration\.input_artifact_bindings\[(\d+)\]/.exec(field);
        if (p && parameters[Number(p[1])]) byField.set(`param:${parameters[Number(p[1])].name}`, description);
        else if (a && inputs[Number(a[1])]) byField.set(`artifact:${inputs[Number(a[1])].name}`, description);
        else if (field === "configuration.name") byField.set("name", description);
        else rest.push(`${field}: ${description}`);
      }
      setErrors(byField);
      setGeneral(byField.size && !rest.length ? "" : [errorMessage(e), ...rest].join("; "));
    }
  }

  const fieldError = (key: string) => {
    const text = errors.get(key);
    return text ? (
      <span className="field-error" role="alert" id={`error-${key}`}>
        {text}
      </span>
    ) : null;
  };

  return (
    <div>
      <h1>Create configuration</h1>
      <form
        className="create"
        aria-label="Create configuration"
        onSubmit={(e) => {
          e.preventDefault();
          void submit();
        }}
      >
        <label>
          Executable
          <select value={chosen} onChange={(e) => setChosen(e.target.value)} required>
            <option value="">choose…</option>
            {executables.value?.executables.map((x) => (
              <option key={x.id} value={x.id}>
                {x.id}
              </option>
            ))}
          </select>
        </label>
        <label>
          Name
          <input
            value={name}
            onChange={(e) => setName(e.target.value)}
            aria-invalid={errors.has("name")}
            aria-describedby={errors.has("name") ? "error-name" : undefined}
          />
          {fieldError("name")}
        </label>
        {executable && (
          <>
            <fieldset>
              <legend>Parameters</legend>
              {executable.parameters.map((p) => (
                <label key={p.name}>
                  {p.name} <small>({paramType(p.type)})</small>
                  <input
                    name={`param-${p.name}`}
                    inputMode={p.type === ParameterType.STRING ? "text" : "decimal"}
                    placeholder={p.defaultValue ?? "required"}
                    value={values[p.name] ?? ""}
                    onChange={(e) => setValues({ ...values, [p.name]: e.target.value })}
                    aria-invalid={errors.has(`param:${p.name}`)}
                    aria-describedby={errors.has(`param:${p.name}`) ? `error-param:${p.name}` : undefined}
                  />
                  {p.description && <small className="muted">{p.description}</small>}
                  {fieldError(`param:${p.name}`)}
                </label>
              ))}
            </fieldset>
            <fieldset>
              <legend>Input artifacts</legend>
              {executable.inputArtifacts.map((a) => (
                <label key={a.name}>
                  {a.name} <small>({kind(a.kind)})</small>
                  <select
                    value={bound[a.name] ?? ""}
                    onChange={(e) => setBound({ ...bound, [a.name]: e.target.value })}
                    aria-invalid={errors.has(`artifact:${a.name}`)}
                  >
                    <option value="">choose…</option>
                    {artifacts.value?.artifacts
                      .filter((x) => x.kind === a.kind)
                      .map((x) => (
                        <option key={x.id} value={x.id}>
                          {x.name} ({x.id})
                        </option>
                      ))}
                  </select>
                  {fieldError(`artifact:${a.name}`)}
                </label>
              ))}
            </fieldset>
          </>
        )}
        <Problem error={general} />
        <button type="submit" disabled={!executable}>
          Create
        </button>
      </form>
    </div>
  );
}
