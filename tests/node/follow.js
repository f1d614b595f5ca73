// A CI bot in another language: loads protos/ at run time (no Python involved),
// creates an execution of a configuration, follows its log to the end and watches its
// status. Half-way through the log it drops its connection and resumes from the last
// cursor it saw, as a restarted pod would.
//
// Usage: node follow.js ADDRESS PROTOS_DIR CONFIGURATION_ID [RESUME_AFTER_LINES]
// Prints one JSON object per line on stdout: {"event": "created", ...} as soon as the
// execution exists, {"event": "following"} once both streams are open, and
// {"event": "done", ...} with everything it received. With TRAINYARD_TOKEN set, every
// call carries it as a bearer token.
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [address, protosDir, configurationId, resumeArg] = process.argv.slice(2);
const resumeAfter = Number(resumeArg || "0");

const definition = protoLoader.loadSync(
  [
    "trainyard/v1/execution_service.proto",
    "trainyard/v1/log_service.proto",
  ],
  { includeDirs: [protosDir], keepCase: true, longs: Number, enums: String, defaults: true },
);
const v1 = grpc.loadPackageDefinition(definition).trainyard.v1;
const credentials = grpc.credentials.createInsecure();
const executions = new v1.ExecutionService(address, credentials);
const logs = new v1.LogService(address, credentials);
const metadata = new grpc.Metadata();
if (process.env.TRAINYARD_TOKEN) {
  metadata.set("authorization", `Bearer ${process.env.TRAINYARD_TOKEN}`);
}
if (process.env.TRAINYARD_RESOURCE_GROUP) {
  metadata.set("ai-resource-group", process.env.TRAINYARD_RESOURCE_GROUP);
}

function emit(object) {
  process.stdout.write(JSON.stringify(object) + "\n");
}

function fail(error) {
  emit({ event: "error", code: error.code, message: String(error.message || error) });
  process.exit(1);
}

function createExecution() {
  return new Promise((resolve, reject) => {
    executions.CreateExecution(
      { configuration_id: configurationId, request_id: `node-${process.pid}-${Date.now()}` },
      metadata,
      { deadline: Date.now() + 10000 },
      (error, response) => (error ? reject(error) : resolve(response.execution)),
    );
  });
}

// Follow the log; after `resumeAfter` lines, cancel and reconnect from the cursor.
function followLogs(executionId, onOpen) {
  const lines = [];
  let cursor = 0;
  let reconnects = 0;
  return new Promise((resolve, reject) => {
    const open = () => {
      const call = logs.TailLogs(
        { execution_id: executionId, follow: true, after_sequence: cursor },
        metadata,
      );
      let dropped = false;
      call.on("data", (message) => {
        if (dropped) return;
        for (const line of message.lines) {
          lines.push({ sequence: line.sequence, step: line.step, stream: line.stream, text: line.text });
        }
        cursor = message.cursor;
        if (resumeAfter && reconnects === 0 && lines.length >= resumeAfter) {
          dropped = true;
          reconnects += 1;
          call.cancel();
          open();
        }
      });
      call.on("error", (error) => {
        if (error.code !== grpc.status.CANCELLED) reject(error);
      });
      call.on("end", () => {
        if (!dropped) resolve({ lines, reconnects });
      });
      if (onOpen) {
        onOpen();
        onOpen = null;
      }
    };
    open();
  });
}

function watchStatus(executionId, onSnapshot) {
  const events = [];
  return new Promise((resolve, reject) => {
    const call = executions.WatchExecutions({ execution_id: executionId }, metadata);
    call.on("data", (event) => {
      events.push({
        type: event.type,
        status: event.execution.status,
        from: event.transition ? event.transition.from_status : null,
        to: event.transition ? event.transition.to_status : null,
        cursor: event.cursor,
      });
      if (event.type === "WATCH_EVENT_TYPE_SNAPSHOT") onSnapshot();
    });
    call.on("error", reject);
    call.on("end", () => resolve(events));
  });
}

async function main() {
  const execution = await createExecution();
  emit({ event: "created", execution_id: execution.id, status: execution.status });
  let pending = 2;
  const ready = () => {
    pending -= 1;
    if (pending === 0) emit({ event: "following" });
  };
  const [log, events] = await Promise.all([
    followLogs(execution.id, ready),
    watchStatus(execution.id, ready),
  ]);
  emit({ event: "done", execution_id: execution.id, lines: log.lines, reconnects: log.reconnects, events });
  executions.close();
  logs.close();
}

main().catch(fail);
