from fn_core.cli import main

main()
