from dsocr.cli import main

main()
