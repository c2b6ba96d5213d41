// vortex gsm-inf … (GSM-Infinite problem generation) and vortex eval … (accuracy harnesses);
// registered by main.cpp.
#pragma once

#include <CLI/CLI.hpp>

namespace vortex::cli {

void add_gsm_commands(CLI::App& app);   // gsm-inf symbolic
void add_eval_commands(CLI::App& app);  // eval gsm-inf

}  // namespace vortex::cli
