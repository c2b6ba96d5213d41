// The expression node behind vortex::FlowExpr, and helpers shared by the builder, the parser and
// to_text. Internal to src/sparse.
#pragma once

#include <memory>
#include <string>

#include "core/error.h"
#include "vortex/flow.h"

namespace vortex {

struct FlowNode {
  FlowOp op = FlowOp::kNumber;
  std::shared_ptr<const FlowNode> a, b;  // operands (null when unused)
  FlowAxis axis = FlowAxis::kFeat;       // reductions only
  float number = 0.0f;                   // kNumber only
  int32_t field = -1;                    // kField: index in the owner's fields
  std::string name;                      // kField: field name; kLoad: state name
  const void* owner = nullptr;           // kField, kLoad: the FlowBuilder that made the leaf
  FlowShape shape;
  FlowLoc loc;
};

enum class FlowOpKind : uint8_t { kLeaf, kUnary, kBinary, kDot, kReduce, kSoftmax };
FlowOpKind flow_op_kind(FlowOp op);

// "3:12: " for a location from the text form, "" for one from C++.
std::string flow_loc_prefix(FlowLoc loc);

// Throws vortex::Error with the location prefix.
template <typename... Args>
[[noreturn]] void flow_fail(FlowLoc loc, fmt::format_string<Args...> format, Args&&... args) {
  throw Error(flow_loc_prefix(loc) + fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace vortex
