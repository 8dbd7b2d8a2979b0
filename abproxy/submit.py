"""The `abproxy` command as a file for `spark-submit`, which runs Python files, not console scripts:

    spark-submit --master yarn "$(python -m abproxy.submit --path)" run --workspace ws

`--path` alone prints this file's path. Absolute imports only: spark-submit runs it as a script.
"""
import sys

from abproxy.cli import main

if __name__ == "__main__":
    if sys.argv[1:] == ["--path"]:
        print(__file__)
        sys.exit(0)
    sys.exit(main())
