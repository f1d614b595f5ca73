// The console's clients: the trainyard.v1 services over the Connect protocol, on the
// server that serves this page. Every call carries the resource group and, when the
// user signed in, the bearer token.
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { DescService } from "@bufbuild/protobuf";
import { BadRequestSchema, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb";
import { ArtifactService } from "./gen/trainyard/v1/artifact_service_pb";
import { ConfigurationService } from "./gen/trainyard/v1/configuration_service_pb";
import { ExecutableService } from "./gen/trainyard/v1/executable_service_pb";
import { ExecutionService } from "./gen/trainyard/v1/execution_service_pb";
import { LogService } from "./gen/trainyard/v1/log_service_pb";
import { MetaService } from "./gen/trainyard/v1/meta_service_pb";
import { MetricService } from "./gen/trainyard/v1/metric_service_pb";
import { ScenarioService } from "./gen/trainyard/v1/scenario_service_pb";
import { ExecutionOperation, ExecutionStatus } from "./gen/trainyard/v1/execution_pb";

const GROUP_KEY = "trainyard.resourceGroup";
const TOKEN_KEY = "trainyard.token";

// The session: resource group (remembered) and token (for this tab only).
export const session = {
  group: localStorage.getItem(GROUP_KEY) ?? "",
  token: sessionStorage.getItem(TOKEN_KEY) ?? "",
  setGroup(group: string) {
    this.group = group;
    localStorage.setItem(GROUP_KEY, group);
  },
  setToken(token: string) {
    this.token = token;
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
};

const headers: Interceptor = (next) => async (request) => {
  if (session.group) request.header.set("ai-resource-group", session.group);
  if (session.token) request.header.set("authorization", `Bearer ${session.token}`);
  return next(request);
};

const transport = createConnectTransport({
  baseUrl: new URL(".", window.location.href).href.replace(/\/$/, ""),
  useBinaryFormat: true,
  interceptors: [headers],
});

function client<T extends DescService>(service: T): Client<T> {
  return createClient(service, transport);
}

export const api = {
  meta: client(MetaService),
  scenarios: client(ScenarioService),
  executables: client(ExecutableService),
  artifacts: client(ArtifactService),
  configurations: client(ConfigurationService),
  executions: client(ExecutionService),
  logs: client(LogService),
  metrics: client(MetricService),
};

// -------------------------------------------------------------------- errors

export function errorMessage(error: unknown): string {
  if (error instanceof ConnectError) {
    const reason = error.findDetails(ErrorInfoSchema)[0]?.reason;
    return reason ? `${error.rawMessage} (${reason})` : error.rawMessage;
  }
  return String(error);
}

export function isUnauthenticated(error: unknown): boolean {
  return error instanceof ConnectError && error.code === Code.Unauthenticated;
}

// BadRequest field violations of an error: field path -> description.
export function fieldViolations(error: unknown): Map<string, string> {
  const found = new Map<string, string>();
  if (error instanceof ConnectError) {
    for (const detail of error.findDetails(BadRequestSchema)) {
      for (const violation of detail.fieldViolations) {
        found.set(violation.field, violation.description);
      }
    }
  }
  return found;
}

export function isAbort(error: unknown): boolean {
  return ConnectError.from(error).code === Code.Canceled;
}

// -------------------------------------------------------------------- display

export function statusName(status: ExecutionStatus): string {
  return ExecutionStatus[status] ?? String(status);
}

export function allows(
  execution: { allowedOperations: ExecutionOperation[] },
  operation: ExecutionOperation,
): boolean {
  return execution.allowedOperations.includes(operation);
}

export function when(ts: Timestamp | undefined): string {
  if (!ts) return "";
  return timestampDate(ts).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function seconds(ts: Timestamp | undefined): number | undefined {
  return ts ? timestampDate(ts).getTime() / 1000 : undefined;
}

export function duration(start?: Timestamp, end?: Timestamp): string {
  const a = seconds(start);
  if (a === undefined) return "";
  const b = seconds(end) ?? Date.now() / 1000;
  const s = Math.max(0, Math.round(b - a));
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m ${s % 60}s`;
}

export { Code, ConnectError, ExecutionOperation, ExecutionStatus };
