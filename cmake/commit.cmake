# Writes OUT (a header defining VORTEX_COMMIT) from the repository at SOURCE, at build time, so
# benchmark results name the commit that was built ("-dirty" when the tree had uncommitted
# changes). The file is rewritten only when its content changes, so nothing rebuilds needlessly.
execute_process(COMMAND git rev-parse --short HEAD WORKING_DIRECTORY ${SOURCE}
                OUTPUT_VARIABLE commit OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR commit STREQUAL "")
  set(commit "unknown")
else()
  execute_process(COMMAND git diff --quiet HEAD -- src include CMakeLists.txt WORKING_DIRECTORY ${SOURCE} RESULT_VARIABLE dirty)
  if(NOT dirty EQUAL 0)
    set(commit "${commit}-dirty")
  endif()
endif()
set(content "#pragma once\n#define VORTEX_COMMIT \"${commit}\"\n")
if(EXISTS ${OUT})
  file(READ ${OUT} old)
endif()
if(NOT "${old}" STREQUAL "${content}")
  file(WRITE ${OUT} "${content}")
endif()
