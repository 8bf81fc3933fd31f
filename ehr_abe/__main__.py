from ehr_abe.cli import main

main()
