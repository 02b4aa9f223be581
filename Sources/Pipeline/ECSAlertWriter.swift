// The ECS alert of a query or new_terms rule written as bytes: the source document's members spliced, the alert's own written in key order.
import AuditEvents

extension AlertDocumentBuilder {
    /// The same bytes as ``ecsDocument(for:)`` serialized with sorted keys, with no tree: the source
    /// document's members (canonical and in key order already) are copied, its `event` object's members
    /// too, and the alert's own members are written in the order sorted keys put them. Every match that
    /// opens a window, and every update, is published through here.
    func splicedECSDocument(for action: AlertAction, source: CanonicalDocument) -> [UInt8] {
        let window = action.window
        let members = source.members
        var sourceEvent: [(key: String, value: ArraySlice<UInt8>)]?
        var sourceTimestamp: ArraySlice<UInt8>?
        for member in members {
            if member.key == "event" {
                // Canonical too: its members in key order, as the document's own are.
                sourceEvent = source.objectMembers(ofValueAt: member.value)?.map { ($0.key, source.bytes[$0.value]) }
            } else if member.key == "@timestamp" {
                sourceTimestamp = source.bytes[member.value]
            }
        }
        var stamp = JSONObjectWriter(capacity: 26)
        stamp.timestamp(window.first.eventTime)
        let ingested = stamp.bytes
        let reason = reason(sourceIP: source.firstString(Self.sourceIP), userName: source.firstString(Self.userName))

        var out = JSONObjectWriter(capacity: source.bytes.count * 2 + ruleBytes.count + 2048)
        // The document's top level: the source's members, the alert's four in their places (theirs win).
        var own: [(key: String, write: (inout JSONObjectWriter) -> Void)] = [
            ("@timestamp", { $0.raw(ingested) }),
            ("ecs", { $0.object { $0.member("version") { $0.string(ecsVersion) } } }),
            ("event", { out in
                out.mergedObject(sourceEvent ?? [], with: [("ingested", { $0.raw(ingested) }), ("kind", { $0.raw(#""signal""#) })])
            }),
            ("kibana", { out in
                out.object { out in
                    out.member("alert") { out in
                        out.object { out in
                            self.writeAlertMembers(action, sourceEvent: sourceEvent, sourceTimestamp: sourceTimestamp, ingested: ingested,
                                                   reason: reason, to: &out)
                        }
                    }
                    out.member("space_ids") { $0.raw(#"["default"]"#) }
                }
            }),
        ]
        own.sort { $0.key < $1.key }
        out.mergedObject(members.map { ($0.key, source.bytes[$0.value]) }, with: own)
        return out.bytes
    }

    /// `kibana.alert`'s members, in key order.
    private func writeAlertMembers(_ action: AlertAction, sourceEvent: [(key: String, value: ArraySlice<UInt8>)]?,
                                   sourceTimestamp: ArraySlice<UInt8>?, ingested: [UInt8], reason: String, to out: inout JSONObjectWriter) {
        let window = action.window
        let origin = window.first.source
        out.member("ancestors") { out in
            out.raw("[")
            out.object { out in
                out.member("depth") { $0.raw("0") }
                out.member("id") { $0.string("\(origin.topic)/\(origin.partition)/\(origin.offset)") }
                out.member("index") { $0.string(origin.topic) }
                out.member("offset") { $0.number(origin.offset) }
                out.member("partition") { $0.number(Int64(origin.partition)) }
                out.member("type") { $0.raw(#""event""#) }
            }
            out.raw("]")
        }
        out.member("depth") { $0.raw("1") }
        out.member("instance") { out in
            out.object { $0.member("id") { $0.string(UUIDv5.make(namespace: UUIDv5.alertNamespace, name: "instance|\(rule.ruleID)|\(window.groupKey)")) } }
        }
        if rule.type == .newTerms {
            out.member("new_terms") { $0.optionalStrings(window.groupValues) }
        }
        out.member("original_event") { out in
            // The source's event without `original`; Kibana's map requires `ingested`: the source's own, else ours.
            let kept = (sourceEvent ?? []).filter { $0.key != "original" }
            let own: [(key: String, write: (inout JSONObjectWriter) -> Void)] =
                kept.contains { $0.key == "ingested" } ? [] : [("ingested", { $0.raw(ingested) })]
            out.mergedObject(kept, with: own)
        }
        out.member("original_time") { out in
            if let sourceTimestamp { out.raw(sourceTimestamp) } else { out.timestamp(window.start) }
        }
        out.member("reason") { $0.string(reason) }
        out.member("risk_score") { $0.number(Int64(rule.riskScore)) }
        out.member("rule") { $0.raw(ruleBytes) }
        out.member("severity") { $0.string(rule.severity) }
        out.member("status") { $0.raw(#""active""#) }
        out.member("suppression") { out in
            out.object { out in
                out.member("docs_count") { $0.number(Int64(window.suppressed)) }
                out.member("end") { $0.timestamp(window.seen.last) }
                if action.late { out.member("late") { $0.raw("true") } }
                out.member("start") { $0.timestamp(window.seen.first) }
                if action.kind == .update { out.member("summary") { $0.summary(window.summary) } }
                out.member("terms") { out in
                    out.array(zip(groupByFields, window.groupValues)) { out, term in
                        out.object { out in
                            out.member("field") { $0.string(term.0) }
                            out.member("value") { out in
                                if let value = term.1 { out.array(CollectionOfOne(value)) { $0.string($1) } } else { out.raw("null") }
                            }
                        }
                    }
                }
                out.member("window") { out in
                    out.object { out in
                        out.member("end") { $0.timestamp(window.end) }
                        out.member("start") { $0.timestamp(window.start) }
                    }
                }
            }
        }
        out.member("uuid") { $0.string(alertID(for: window)) }
        out.member("workflow_status") { $0.raw(#""open""#) }
    }
}
