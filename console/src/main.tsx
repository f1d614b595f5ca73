import { StrictMode, useCallback, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import "./style.css";
import { api, errorMessage, isUnauthenticated, session } from "./api";
import type { GetMetaResponse } from "./gen/trainyard/v1/meta_service_pb";
import { MetaContext, navigate, useRoute } from "./common";
import { ExecutionsScreen, prefetchExecutions } from "./screens/Executions";
import { ExecutionScreen } from "./screens/Execution";
import { CompareScreen } from "./screens/Compare";
import {
  ArtifactsScreen,
  ExecutableScreen,
  ExecutablesScreen,
  ScenariosScreen,
} from "./screens/Catalog";
import { ConfigurationScreen, ConfigurationsScreen, NewConfigurationScreen } from "./screens/Configurations";

function SignIn({ onDone, failed }: { onDone: () => void; failed: string }) {
  const [token, setToken] = useState("");
  return (
    <form
      className="signin"
      aria-label="Sign in"
      onSubmit={(e) => {
        e.preventDefault();
        session.setToken(token.trim());
        onDone();
      }}
    >
      <h1>Sign in</h1>
      <p>This server requires a token. Paste the bearer token you were given.</p>
      <label>
        Token
        <input
          type="password"
          autoComplete="off"
          value={token}
          onChange={(e) => setToken(e.target.value)}
          autoFocus
        />
      </label>
      {failed && (
        <p role="alert" className="error">
          {failed}
        </p>
      )}
      <button type="submit">Sign in</button>
    </form>
  );
}

function GroupSelector({ meta, onChange }: { meta: GetMetaResponse; onChange: () => void }) {
  const [value, setValue] = useState(session.group || meta.defaultResourceGroup);
  return (
    <form
      className="group"
      onSubmit={(e) => {
        e.preventDefault();
        session.setGroup(value.trim());
        onChange();
      }}
    >
      <label>
        Resource group
        <input value={value} onChange={(e) => setValue(e.target.value)} size={14} />
      </label>
      <button type="submit">Switch</button>
    </form>
  );
}

const NAV: Array<[string, string, (m: GetMetaResponse) => boolean]> = [
  ["executions", "Executions", () => true],
  ["configurations", "Configurations", () => true],
  ["executables", "Executables", () => true],
  ["scenarios", "Scenarios", () => true],
  ["artifacts", "Artifacts", () => true],
  ["compare", "Compare", (m) => Boolean(m.capabilities?.metrics)],
];

function Screen({ meta }: { meta: GetMetaResponse }) {
  const route = useRoute();
  const [name, ...rest] = route;
  switch (name) {
    case "executions":
      return rest[0] ? <ExecutionScreen key={rest[0]} id={rest[0]} tab={rest[1] ?? "overview"} /> : <ExecutionsScreen />;
    case "configurations":
      if (rest[0] === "new") return <NewConfigurationScreen executableId={rest[1] ?? ""} />;
      return rest[0] ? <ConfigurationScreen id={rest[0]} /> : <ConfigurationsScreen />;
    case "executables":
      return rest[0] ? <ExecutableScreen id={rest[0]} /> : <ExecutablesScreen />;
    case "scenarios":
      return <ScenariosScreen />;
    case "artifacts":
      return <ArtifactsScreen />;
    case "compare":
      return meta.capabilities?.metrics ? <CompareScreen /> : <p>This server keeps no metrics.</p>;
    default:
      return <ExecutionsScreen />;
  }
}

function App() {
  const [meta, setMeta] = useState<GetMetaResponse | null>(null);
  const [needToken, setNeedToken] = useState(false);
  const [failed, setFailed] = useState("");
  const [generation, setGeneration] = useState(0);
  const route = useRoute();

  const load = useCallback(async () => {
    try {
      const early = metaPromise;
      metaPromise = null;
      const answer = await (early ?? api.meta.getMeta({}));
      setMeta(answer);
      if (answer.authEnabled && !session.token) {
        setNeedToken(true);
        return;
      }
      if (answer.authEnabled) {
        // Check the token with a call that needs one.
        await api.scenarios.listScenarios({ pageSize: 1 });
      }
      setNeedToken(false);
      setFailed("");
    } catch (error) {
      if (isUnauthenticated(error)) {
        session.setToken("");
        setNeedToken(true);
        setFailed(errorMessage(error));
      } else {
        setFailed(errorMessage(error));
      }
    }
  }, []);

  useEffect(() => {
    void load();
  }, [load]);

  if (!meta) {
    return <p role="status">{failed ? `Cannot reach the server: ${failed}` : "Loading…"}</p>;
  }
  if (needToken) {
    return <SignIn failed={failed} onDone={() => void load()} />;
  }
  return (
    <MetaContext.Provider value={meta}>
      <header className="top">
        <a className="brand" href="#/executions">
          Trainyard
        </a>
        <nav aria-label="Screens">
          {NAV.filter(([, , shown]) => shown(meta)).map(([path, label]) => (
            <a key={path} href={`#/${path}`} aria-current={route[0] === path ? "page" : undefined}>
              {label}
            </a>
          ))}
        </nav>
        <GroupSelector meta={meta} onChange={() => setGeneration((g) => g + 1)} />
        {meta.authEnabled && (
          <button
            type="button"
            onClick={() => {
              session.setToken("");
              setNeedToken(true);
            }}
          >
            Sign out
          </button>
        )}
      </header>
      <main key={generation}>
        <Screen meta={meta} />
      </main>
    </MetaContext.Provider>
  );
}

if (!window.location.hash) navigate("executions");

// Asked for before React's first render and paint: the server's answers arrive
// meanwhile.
let metaPromise: Promise<GetMetaResponse> | null = api.meta.getMeta({});
metaPromise.catch(() => undefined);
if (/^#\/?(executions)?\/?$/.test(window.location.hash)) prefetchExecutions();

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
