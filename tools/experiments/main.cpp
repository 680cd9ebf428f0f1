// vla_experiments: reproduces and stresses the paper's claims (docs/experiments.md).
//
//   vla_experiments [--out DIR] [--threads N] [--scale X] [all|state_norm|state_norm_tinylm|adversarial|jacobian|recall|time_split|soak]...
//
// Writes CSVs to DIR (default docs/figures) and Markdown tables to DIR/tables/. Every random
// number comes from fixed seeds, so a rerun reproduces the files (on the same build).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "common.hpp"

int main(int argc, char** argv) {
  vlaexp::Options opt;
  std::vector<std::string> which;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--out")
      opt.out_dir = value();
    else if (a == "--threads")
      opt.threads = std::atoi(value().c_str());
    else if (a == "--scale")
      opt.scale = std::atof(value().c_str());
    else if (a == "-h" || a == "--help") {
      std::printf("usage: %s [--out DIR] [--threads N] [--scale X] [all|state_norm|state_norm_tinylm|adversarial|jacobian|recall|time_split|soak]...\n",
                  argv[0]);
      return 0;
    } else
      which.push_back(a);
  }
  if (which.empty()) which.push_back("all");
  std::filesystem::create_directories(opt.out_dir + "/tables");
  const std::vector<std::pair<std::string, void (*)(const vlaexp::Options&)>> all = {
      {"state_norm", vlaexp::run_state_norm},
#ifdef VLA_EXPERIMENTS_TINYLM
      {"state_norm_tinylm", vlaexp::run_state_norm_tinylm},
#endif
      {"adversarial", vlaexp::run_adversarial},
      {"jacobian", vlaexp::run_jacobian},
      {"recall", vlaexp::run_recall},
      {"time_split", vlaexp::run_time_split},
      {"soak", vlaexp::run_soak}};
  for (const auto& w : which) {
    bool found = false;
    for (const auto& [name, fn] : all)
      if (w == "all" || w == name) {
        found = true;
        const auto t0 = std::chrono::steady_clock::now();
        fn(opt);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::fprintf(stderr, "[%s] done in %.1f s\n", name.c_str(), s);
      }
    if (!found) {
      std::fprintf(stderr, "unknown experiment '%s'\n", w.c_str());
      return 2;
    }
  }
  return 0;
}
