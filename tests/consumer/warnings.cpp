// Consumer code that instantiates the main entry points, compiled with
// AVX-512 flags and -Werror by the test consumer.avx512_warnings (compile
// only: it need not run on this CPU). GCC 12 raises hundreds of false
// -Wmaybe-uninitialized warnings inside its AVX-512 intrinsics (PR 105593);
// the headers silence them in the library's code (config.hpp), and this
// checks that none reaches the consumer.
#include <longctx/longctx.hpp>
#include <longctx/models.hpp>

#include <vector>

using namespace longctx;

int main() {
  const index_t h = 4, n = 64, d = 32;
  std::vector<float> q(h * n * d, 0.1f), o(q.size()), lse(h * n);
  const auto v = from_bhnd(q.data(), 1, h, n, d);
  const auto out = from_bhnd(o.data(), 1, h, n, d);
  attention(v, v, v, out, default_scale(d), causal{}, lse_view(lse.data(), dextents<index_t, 3>(1, h, n)));
  decode(v.tokens(0, 1), v, v, out.tokens(0, 1), default_scale(d));
  const attention_dims dims{.b = 1, .h = h, .h_kv = h, .d = d};
  const tova t{.budget = 16};
  auto ts = t.make_state(dims);
  t.forward(ts, {v, v, v}, out);
  const bounded_cache<tova_rule, q8> t8{.budget = 16};
  auto t8s = t8.make_state(dims);
  t8.forward(t8s, {v, v, v}, out);
  const infini inf{.segment = 16, .beta = std::vector<float>(h, 0.0f)};
  auto is = inf.make_state(dims);
  inf.forward(is, {v, v, v}, out);
  const flash fl{.chunk = 16};
  auto fs = fl.make_state(dims);
  fl.forward(fs, {v, v, v}, out);
  rmt_reference_backbone<> model({.width = 32, .heads = 2, .layers = 1});
  const rmt r{.memory = 2, .segment_budget = 16};
  std::vector<float> mem(2 * 32, 0.0f), x(40 * 32, 0.5f), y(x.size());
  auto rs = r.make_state(model, make_matrix(mem.data(), 2, 32));
  r.forward(rs, make_matrix(x.data(), 40, 32), make_matrix(y.data(), 40, 32));
  return o[0] > 0 ? 0 : 1;
}
