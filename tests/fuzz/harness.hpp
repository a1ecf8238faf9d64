// What every libFuzzer harness here shares: its own command-line flags
// (read in LLVMFuzzerInitialize; libFuzzer ignores flags it does not know)
// and -write_seeds=DIR, which writes the harness's seed inputs to DIR and
// exits (how the committed corpora were started; libFuzzer's own
// -seed_inputs lists seed files, as the ctest smokes use it).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace longctx_fuzz {

// Whether flag (exactly, e.g. "-strict=1") is among the arguments.
inline bool has_flag(int argc, char** argv, std::string_view flag) {
  for (int i = 1; i < argc; ++i)
    if (argv[i] == flag) return true;
  return false;
}

// A seed input and the file name it gets.
struct seed_file {
  std::string name;
  std::vector<unsigned char> bytes;
};

// With -write_seeds=DIR among the arguments: writes make_seeds()'s files to
// DIR and exits (status 1 if one cannot be written).
template <class F>
void write_seeds_if_asked(int argc, char** argv, F&& make_seeds) {
  constexpr std::string_view flag = "-write_seeds=";
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a.substr(0, flag.size()) != flag) continue;
    const std::string dir(a.substr(flag.size()));
    for (const seed_file& s : std::forward<F>(make_seeds)()) {
      const std::string path = dir + "/" + s.name;
      std::FILE* f = std::fopen(path.c_str(), "wb");
      if (!f || std::fwrite(s.bytes.data(), 1, s.bytes.size(), f) != s.bytes.size()) {
        std::fprintf(stderr, "cannot write the seed input %s\n", path.c_str());
        std::exit(1);
      }
      std::fclose(f);
    }
    std::exit(0);
  }
}

}  // namespace longctx_fuzz
