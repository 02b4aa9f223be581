// `audit-sentinel-sim`: the deterministic simulation at length, in a release build (make test, make chaos).
import Detection
import Foundation
import PipelineSimulation

/// Usage: audit-sentinel-sim [--schedules N] [--base-seed S] [--seed S] [--threads T] [--rules FILE]
/// Exit status 0 when every schedule gives the alerts of an uninterrupted run, 1 otherwise (failing seeds
/// printed, each rerunnable alone with --seed), 2 on a usage error.
var arguments = Array(CommandLine.arguments.dropFirst())
@MainActor func option(_ name: String) -> String? {
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return nil }
    defer { arguments.removeSubrange(index...(index + 1)) }
    return arguments[index + 1]
}
let schedules = option("--schedules").flatMap(Int.init) ?? 10_000
let base = option("--base-seed").flatMap(UInt64.init) ?? 1
let only = option("--seed").flatMap(UInt64.init)
let threads = option("--threads").flatMap(Int.init) ?? ProcessInfo.processInfo.activeProcessorCount
let rulesPath = option("--rules") ?? "Config/rules/kubernetes_denied_service_account_request.toml"
guard arguments.isEmpty else {
    FileHandle.standardError.write(Data("audit-sentinel-sim: unknown arguments \(arguments)\n".utf8))
    exit(2)
}
let rules: RuleSet
do {
    rules = try RuleSet.load(files: [rulesPath])
} catch {
    FileHandle.standardError.write(Data("audit-sentinel-sim: \(error)\n".utf8))
    exit(2)
}
let started = Date()
if let only {
    let failure = Simulation.check(seed: only, rules: rules)
    print(failure ?? "seed \(only): the alerts of an uninterrupted run")
    exit(failure == nil ? 0 : 1)
}
let failures = Simulation.run(base: base, count: schedules, threads: threads, rules: rules)
for failure in failures { print("FAIL \(failure)") }
print("simulation: \(schedules) schedules (seeds \(base)…\(base + UInt64(schedules) - 1)), \(failures.count) failing, \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
exit(failures.isEmpty ? 0 : 1)
