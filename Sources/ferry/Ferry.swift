import FerryCommands

@main
struct Ferry {
    static func main() async {
        await FerryCommand.main()
    }
}
