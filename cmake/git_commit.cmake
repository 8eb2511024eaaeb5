# Writes OUTPUT (a header defining aiopt::build::git_commit) from `git rev-parse` in SOURCE_DIR,
# touching it only when the commit changed, so a new commit rebuilds just what reports it.
execute_process(COMMAND git rev-parse --short=12 HEAD
  WORKING_DIRECTORY ${SOURCE_DIR} OUTPUT_VARIABLE commit
  OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
execute_process(COMMAND git status --porcelain --untracked-files=no
  WORKING_DIRECTORY ${SOURCE_DIR} OUTPUT_VARIABLE changes
  OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT commit)
  set(commit "unknown")
elseif(changes)
  string(APPEND commit "-dirty")
endif()
set(text "#pragma once\n// Generated at build time by cmake/git_commit.cmake.\nnamespace aiopt::build {\ninline constexpr const char* git_commit = \"${commit}\";\n}  // namespace aiopt::build\n")
if(EXISTS ${OUTPUT})
  file(READ ${OUTPUT} old)
endif()
if(NOT old STREQUAL text)
  file(WRITE ${OUTPUT} "${text}")
endif()
