// vortex — command-line entry point. Every failure a user can cause prints "error: <what>" on
// stderr and exits 1; nothing here aborts.
#include <cstdio>
#include <iostream>
#include <map>
#include <string>

#include "cli/cli.h"
#include "cli/commands_eval.h"
#include "core/error.h"
#include "runtime/run_info.h"

namespace vortex::cli {

std::vector<int32_t> parse_id_list(const std::string& text, const std::string& flag) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  check(!text.empty(), "{} is empty: give comma-separated token ids such as 1,2,3", flag);
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    size_t used = 0;
    long long value = 0;
    try {
      value = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    check(used > 0 && used == item.size() && value >= INT32_MIN && value <= INT32_MAX,
          "{}: '{}' is not a token id (give comma-separated integers such as 1,2,3)", flag, item);
    ids.push_back(static_cast<int32_t>(value));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return ids;
}

void print_json(const nlohmann::json& value) {
  std::cout << value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
}

// Unknown command words ("vortex frobnicate", "vortex eval frob") and a missing subcommand
// ("vortex eval") get an error that lists the choices; CLI11's own messages do not name them.
void check_command_words(const CLI::App& app, int argc, char** argv) {
  const CLI::App* level = &app;
  std::string path = "vortex";
  for (int i = 1; level->get_require_subcommand_min() > 0; ++i) {
    std::string names;
    const CLI::App* next = nullptr;
    for (const CLI::App* sub : level->get_subcommands({})) {
      names += (names.empty() ? "" : ", ") + sub->get_name();
      if (i < argc && sub->get_name() == argv[i]) next = sub;
    }
    if (i >= argc || argv[i][0] == '-') {  // flags (--help, --version) and bare "vortex" are CLI11's
      check(i < argc || level == &app, "'{}' needs a subcommand: {}", path, names);
      return;
    }
    if (level == &app) check(next != nullptr, "unknown command '{}' (commands: {})", argv[i], names);
    check(next != nullptr, "unknown subcommand '{}' of '{}' (subcommands: {})", argv[i], path, names);
    level = next;
    path += std::string(" ") + argv[i];
  }
}

// The command line's spelling of a library option (OptionError::option()).
std::string flag_of(const std::string& option) {
  static const std::map<std::string, std::string> flags = {
      {"page_size", "--page-size"},   {"kv_memory_gib", "--kv-memory"}, {"precision", "--precision"}, {"kv_dtype", "--kv-dtype"},
      {"device", "--device"},         {"max_batch", "--max-batch"},     {"prefill_chunk", "--prefill-chunk"},
      {"top_n", "--top"},             {"sparse_from", "--sparse-from"}, {"tensor_parallel", "--tensor-parallel"}};
  auto it = flags.find(option);
  return it == flags.end() ? option : it->second;
}

}  // namespace vortex::cli

int main(int argc, char** argv) {
  CLI::App app{"vortex: a sparse-attention inference engine for long generation"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "vortex 0.1.0 (" + std::string(vortex::build_commit()) + ")");
  vortex::cli::add_text_commands(app);
  vortex::cli::add_model_commands(app);
  vortex::cli::add_bench_commands(app);
  vortex::cli::add_serve_commands(app);
  vortex::cli::add_gsm_commands(app);
  vortex::cli::add_eval_commands(app);
  vortex::cli::add_batch_commands(app);
  vortex::cli::add_rollout_commands(app);
  vortex::cli::add_cost_commands(app);
  vortex::cli::add_calibrate_commands(app);
  try {
    vortex::cli::check_command_words(app, argc, argv);
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "error: " << e.what() << "\n(run 'vortex --help' for usage)" << std::endl;
    return 1;
  } catch (const vortex::OptionError& e) {  // the library names its options; the command line has flags
    std::cout.flush();
    std::cerr << "error: " << vortex::cli::flag_of(e.option()) << " " << e.complaint() << std::endl;
    return 1;
  } catch (const vortex::Error& e) {
    std::cout.flush();
    std::cerr << "error: " << e.what() << std::endl;
    return 1;
  } catch (const std::bad_alloc&) {
    std::cerr << "error: out of memory" << std::endl;
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: internal: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
