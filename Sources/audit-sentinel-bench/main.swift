import Foundation
import Detection

/// `make bench`: throughput, latency and memory figures, printed as a table and written as JSON under
/// `.bench/`. Every comparison is a ratio measured in the same run (machines here are noisy).
/// Suites: decode, detect, core, memory, e2e, latency, scale (all by default). The tansu parts run when
/// BENCH_TANSU_BOOTSTRAP names a running tansu (scripts/bench.sh starts one).
var report = BenchReport()
let arguments = CommandLine.arguments.dropFirst()
let suites = arguments.isEmpty ? ["decode", "detect", "core", "memory", "e2e", "latency", "scale"] : Array(arguments)
let rulePath = "Config/rules/kubernetes_denied_service_account_request.toml"
let rules = try RuleSet.load(files: [rulePath])
let tansu = ProcessInfo.processInfo.environment["BENCH_TANSU_BOOTSTRAP"].flatMap { $0.isEmpty ? nil : $0 }
/// BENCH_BROKERS picks the brokers of the end-to-end suites: "mock", "tansu" or both (default).
let brokerNames = (ProcessInfo.processInfo.environment["BENCH_BROKERS"] ?? "mock,tansu").split(separator: ",").map(String.init)
func brokers() throws -> [BenchBroker] {
    var result: [BenchBroker] = []
    if brokerNames.contains("mock") { result.append(try BenchBroker.mock()) }
    if brokerNames.contains("tansu"), let tansu { result.append(try BenchBroker.tansu(tansu)) }
    return result
}
for suite in suites {
    FileHandle.standardError.write(Data("bench: \(suite)…\n".utf8))
    switch suite {
    case "decode": DecodeBenchmark(count: environmentInt("BENCH_EVENTS", 20_000), deniedFraction: 0.01, seed: 7).run(report: &report)
    case "detect": try DetectionBenchmark(rulePath: rulePath).run(report: &report)
    case "core": try CoreBenchmark(rulePath: rulePath).run(report: &report)
    case "core-rules":  // Elastic's rule set alone (also part of "core"), for profiling it
        try CoreBenchmark(rulePath: rulePath).runElasticRuleSet(count: environmentInt("BENCH_EVENTS", 20_000), report: &report)
    case "memory": try MemoryBenchmark(rulePath: rulePath).run(report: &report)
    case "e2e": for broker in try brokers() { try EndToEndBenchmark(broker: broker, rules: rules).run(report: &report) }
    case "latency":
        for broker in try brokers() {
            for rate in [10_000, 50_000] {
                try LatencyBenchmark(broker: broker, rules: rules).run(rate: rate, duration: environmentInt("BENCH_LATENCY_SECONDS", 10), report: &report)
            }
        }
    case "scale": try EndToEndBenchmark(broker: try BenchBroker.mock(), rules: rules).scaleOut(report: &report)
    case "pipeline-once":
        // One pipeline round on the mock over BENCH_EVENTS fresh events (1 % matches, or BENCH_E2E_MATCH_RATE), for callgrind
        // (scripts/bench.sh counts the instructions of the pipeline's own thread per record).
        let count = environmentInt("BENCH_EVENTS", 8_000)
        let round = try EndToEndBenchmark(broker: try BenchBroker.mock(), rules: rules).pipelineOnce(count: count)
        print("pipeline-once: \(count) events, \(String(format: "%.0f", round.eventsPerSecond)) events/s, "
              + "\(round.polls) polls with records (\(round.fullPolls) full)")
        exit(0)
    case "core-once":
        // One pass of the core over BENCH_EVENTS events at BENCH_MATCH_RATE, for callgrind (scripts/bench.sh
        // collects instructions inside `CoreBenchmark.measuredPass` only).
        let rate = Double(ProcessInfo.processInfo.environment["BENCH_MATCH_RATE"] ?? "0.01") ?? 0.01
        let count = environmentInt("BENCH_EVENTS", 5_000)
        let matches = try CoreBenchmark(rulePath: rulePath).once(records: corpus(count: count, matchRate: rate, seed: 21))
        print("core-once: \(count) events, \(matches) matches")
        exit(0)
    default:
        FileHandle.standardError.write(Data("unknown benchmark suite \(suite)\n".utf8))
        exit(2)
    }
}
if tansu == nil, brokerNames.contains("tansu"), suites.contains(where: { $0 == "e2e" || $0 == "latency" }) { report.note("tansu: not measured (BENCH_TANSU_BOOTSTRAP unset; `make bench` starts one)") }
report.print()
try report.write(to: URL(fileURLWithPath: ProcessInfo.processInfo.environment["BENCH_OUTPUT"] ?? ".bench/results.json"))
