// Loads a SavedModel the way TensorFlow Serving does (tensorflow::LoadSavedModel
// with the "serve" tag), feeds encoded image files to a signature whose single
// input is a tf.string batch, and prints every output.
//
//   load_and_run EXPORT_DIR SIGNATURE [--batch B] [--repeat R] FILE...
//
// Output, one line per output tensor, sorted by output name:
//   NAME<TAB>DTYPE<TAB>DIM,DIM,...<TAB>VALUE VALUE ...
// floats as %.9g, integers in decimal, strings as "x" + lowercase hex of their
// bytes (so the empty string is "x").
// --batch B repeats the files cyclically to B images; --repeat R runs the
// signature R times and prints "latency_ms<TAB>T1 T2 ..." (for benchmarks).
// A failed load or run prints "error: <status>" to stderr and exits 1.
//
// Build (see resnet_tf/serving/__init__.py, build_loader):
//   g++ -std=c++17 -O2 -D_GLIBCXX_USE_CXX11_ABI=1 -DEIGEN_MAX_ALIGN_BYTES=64
//       -I$SP/include load_and_run.cc -o load_and_run -L$SP -Wl,--no-as-needed
//       -l:libtensorflow_cc.so.2 -l:libtensorflow_framework.so.2 -Wl,-rpath,$SP
// where SP is the tensorflow package folder. Without --no-as-needed the session
// factory is not linked in ("No session factory registered").

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "tensorflow/cc/saved_model/loader.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/types.pb.h"
#include "tensorflow/core/protobuf/meta_graph.pb.h"
#include "tensorflow/core/public/session.h"

namespace {

constexpr char kServeTag[] = "serve";  // tag_constants.h is not in the pip wheel

int Fail(const std::string& message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  return 1;
}

bool ReadFile(const std::string& path, std::string* contents) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  contents->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return true;
}

std::string Hex(const std::string& bytes) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

void PrintTensor(const std::string& name, const tensorflow::Tensor& t) {
  std::ostringstream line;
  line << name << '\t' << tensorflow::DataTypeString(t.dtype()) << '\t';
  for (int d = 0; d < t.dims(); ++d) line << (d ? "," : "") << t.dim_size(d);
  line << '\t';
  const int64_t n = t.NumElements();
  char buf[64];
  for (int64_t i = 0; i < n; ++i) {
    if (i) line << ' ';
    switch (t.dtype()) {
      case tensorflow::DT_FLOAT:
        std::snprintf(buf, sizeof(buf), "%.9g", t.flat<float>()(i));
        line << buf;
        break;
      case tensorflow::DT_INT32: line << t.flat<int32_t>()(i); break;
      case tensorflow::DT_INT64: line << t.flat<int64_t>()(i); break;
      case tensorflow::DT_STRING: line << 'x' << Hex(std::string(t.flat<tensorflow::tstring>()(i))); break;
      default: line << '?';
    }
  }
  std::printf("%s\n", line.str().c_str());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    return Fail("usage: load_and_run EXPORT_DIR SIGNATURE [--batch B] [--repeat R] FILE...");
  }
  const std::string export_dir = argv[1], signature = argv[2];
  int batch = 0, repeat = 0;
  std::vector<std::string> files;
  for (int i = 3; i < argc; ++i) {
    const std::string arg = argv[i];
    if ((arg == "--batch" || arg == "--repeat") && i + 1 < argc) {
      (arg == "--batch" ? batch : repeat) = std::atoi(argv[++i]);
    } else {
      files.push_back(arg);
    }
  }
  if (files.empty()) return Fail("no image files given");

  tensorflow::SavedModelBundle bundle;
  tensorflow::SessionOptions session_options;
  tensorflow::RunOptions run_options;
  absl::Status status = tensorflow::LoadSavedModel(
      session_options, run_options, export_dir, {kServeTag}, &bundle);
  if (!status.ok()) return Fail(export_dir + ": " + status.ToString());

  const auto& signatures = bundle.meta_graph_def.signature_def();
  auto found = signatures.find(signature);
  if (found == signatures.end()) return Fail("no signature " + signature + " in " + export_dir);
  const tensorflow::SignatureDef& def = found->second;
  if (def.inputs_size() != 1 || def.inputs().begin()->second.dtype() != tensorflow::DT_STRING) {
    return Fail("signature " + signature + " does not take a single string input");
  }

  const int n = batch > 0 ? batch : static_cast<int>(files.size());
  tensorflow::Tensor input(tensorflow::DT_STRING, tensorflow::TensorShape({n}));
  std::vector<std::string> contents(files.size());
  for (size_t i = 0; i < files.size(); ++i) {
    if (!ReadFile(files[i], &contents[i])) return Fail("cannot read " + files[i]);
  }
  for (int i = 0; i < n; ++i) input.flat<tensorflow::tstring>()(i) = contents[i % files.size()];

  // Outputs by name, as TF Serving's PredictResponse keys them.
  std::vector<std::pair<std::string, std::string>> outputs;  // (name, tensor name)
  for (const auto& kv : def.outputs()) outputs.emplace_back(kv.first, kv.second.name());
  std::sort(outputs.begin(), outputs.end());
  std::vector<std::string> fetch;
  for (const auto& o : outputs) fetch.push_back(o.second);
  const std::vector<std::pair<std::string, tensorflow::Tensor>> feed = {
      {def.inputs().begin()->second.name(), input}};

  std::vector<tensorflow::Tensor> results;
  std::vector<double> latencies;
  for (int r = 0; r < std::max(repeat, 1); ++r) {
    results.clear();
    const auto start = std::chrono::steady_clock::now();
    status = bundle.session->Run(feed, fetch, {}, &results);
    const auto stop = std::chrono::steady_clock::now();
    if (!status.ok()) return Fail(status.ToString());
    latencies.push_back(std::chrono::duration<double, std::milli>(stop - start).count());
  }
  for (size_t i = 0; i < outputs.size(); ++i) PrintTensor(outputs[i].first, results[i]);
  if (repeat > 0) {
    std::printf("latency_ms\t");
    for (size_t i = 0; i < latencies.size(); ++i) std::printf(i ? " %.3f" : "%.3f", latencies[i]);
    std::printf("\n");
  }
  return 0;
}
