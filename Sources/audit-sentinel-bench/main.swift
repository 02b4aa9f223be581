import Foundation

/// `make bench`: throughput and memory figures, printed as a table and written as JSON under `.bench/`.
/// Every comparison is a ratio measured in the same run (machines here are noisy).
var report = BenchReport()
let arguments = CommandLine.arguments.dropFirst()
let suites = arguments.isEmpty ? ["decode", "detect"] : Array(arguments)
for suite in suites {
    switch suite {
    case "decode": DecodeBenchmark(count: Int(ProcessInfo.processInfo.environment["BENCH_EVENTS"] ?? "") ?? 20_000, deniedFraction: 0.01, seed: 7).run(report: &report)
    case "detect": try DetectionBenchmark(rulePath: "Config/rules/kubernetes_denied_service_account_request.toml").run(report: &report)
    default:
        FileHandle.standardError.write(Data("unknown benchmark suite \(suite)\n".utf8))
        exit(2)
    }
}
report.print()
try report.write(to: URL(fileURLWithPath: ".bench/results.json"))
