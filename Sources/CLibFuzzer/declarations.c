// SwiftPM needs a source file in a C target; the target only declares libFuzzer's driver.
#include "clibfuzzer.h"
